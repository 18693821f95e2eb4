"""A patient's report rendered from the end-to-end run's store (flows.patients.render): the DICOM SEG decodes
back to the very ROI the pipeline measured, the QuPath GeoJSON holds every tile with its attention at its
level-0 place, every image of report.html is an inline PNG; and the API answers an unknown patient with a 404
that names it."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _full_patient(store: Path) -> str:
    """The first patient (sorted) with radiology (CT and PET), slide features and a processed spatial sample."""
    from flows.patients.build import PatientStore

    ps = PatientStore(store)
    for pid in sorted(ps.radiology):
        result = json.loads((ps.radiology[pid] / "result.json").read_text())
        if result.get("suv_npz") and pid in ps.slides and pid in ps.spatial:
            return pid
    raise AssertionError(f"{store}: no patient with CT, PET, slide and spatial sample")


@pytest.fixture(scope="module")
def patient_report(e2e_run) -> dict:
    """The report H-report's builder makes for one complete patient; where the run deployed no diagnosis model
    (so no attention, probabilities or Shapley values), those parts are filled with seeded values: the
    renderer's contract holds for any values."""
    from flows.patients.build import build_report

    store = e2e_run["store"]
    pid = _full_patient(store)
    report = copy.deepcopy(build_report(store, pid))
    rng = np.random.default_rng(7)
    tiles = report["slide"]["tiles"]
    if any(t["attention"] is None for t in tiles):
        for t, a in zip(tiles, rng.dirichlet(np.full(len(tiles), 0.3))):
            t["attention"] = float(a)
    if report.get("diagnosis") is None:
        p = rng.dirichlet(np.ones(3))
        report["diagnosis"] = {"model": "attention:ct+pet+wsi", "version": "test", "predicted": "B",
                               "probabilities": dict(zip("ABC", map(float, p)))}
        report["modality_contributions"] = {"base_value": 0.33, "values": {"ct": 0.2, "wsi": -0.05, "pet": 0.1},
                                            "target_class": "B"}
    return report


@pytest.fixture(scope="module")
def rendered(patient_report, e2e_run, tmp_path_factory) -> Path:
    from flows.patients.render import render_report

    return render_report(patient_report, e2e_run["store"], tmp_path_factory.mktemp("report"))


def _pipeline_roi(store: Path, pid: str):
    """The CT and the ROI mask on its grid exactly as the run's radiology stage measured them: its function
    (flows.stages.radiology_study.measure_study) over the patient's CT and PET series as read from DICOM, its
    segmentations and the run's ROI config."""
    from flows.patients.build import PatientStore
    from flows.stages.radiology_study import measure_study
    from imaging.ct import read_ct
    from imaging.pet import read_pet_suv
    from imaging.roi import RoiSpec

    ps = PatientStore(store)
    cfg = ps.run_record.get("config", {})
    spec = RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto"))
    ct = read_ct(ps.discovery.cts[pid])
    suv = read_pet_suv(ps.discovery.pets[pid])
    study = measure_study(ct, suv, list(ps.discovery.segmentations.get(pid, [])), spec)
    return ct, study.measurement.ct_mask


def test_seg_decodes_back_to_the_roi_the_pipeline_measured(rendered, patient_report, e2e_run):
    import highdicom as hd
    import pydicom

    from imaging.dicom_seg import seg_mask
    from imaging.dicom_series import read_dicom_series_headers

    pid = patient_report["patient_id"]
    seg_path = rendered.parent / "roi_seg.dcm"
    _, headers = read_dicom_series_headers(Path(patient_report["radiology"]["ct_series"]["path"]))
    ct, pipeline_mask = _pipeline_roi(e2e_run["store"], pid)
    row = json.loads((e2e_run["store"] / "imaging" / "radiology" / pid / "result.json").read_text())["roi_row"]
    assert int(pipeline_mask.sum()) == row["n_voxels_ct"] > 0  # the very ROI the run's phenotypes measured
    # highdicom reads it frame by frame against the CT instances it references
    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY" and seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    uids = [h.SOPInstanceUID for h in headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0] > 0
    assert int(pixels.sum()) == row["n_voxels_ct"]
    assert np.array_equal(pixels, pipeline_mask)  # Dice 1 on the CT grid
    # and the project's own SEG reader places it on the CT grid from its geometry alone
    assert np.array_equal(seg_mask(pydicom.dcmread(seg_path), seg_path, 1, ct), pipeline_mask)
    assert seg.SegmentSequence[0].SegmentLabel == patient_report["radiology"]["roi"]["label"]


def test_seg_of_a_named_rtstruct_roi_is_that_roi(patient_report, e2e_run, tmp_path):
    """A report naming the patient's RTSTRUCT ROI: the SEG is that ROI as the RTSTRUCT rasteriser draws it."""
    import highdicom as hd

    from flows.patients.build import PatientStore
    from flows.patients.render import roi_on_ct, write_roi_seg
    from imaging.segmentation import list_rois, roi_mask

    pid = patient_report["patient_id"]
    rtstruct = next(p for p in PatientStore(e2e_run["store"]).discovery.segmentations[pid]
                    if list_rois(p)[0].kind == "rtstruct")
    ref = list_rois(rtstruct)[0]
    report = copy.deepcopy(patient_report)
    report["radiology"]["roi"] = {"source": "rtstruct", "label": ref.name, "path": str(rtstruct)}
    roi = roi_on_ct(report, e2e_run["store"])
    expected = roi_mask(ref, roi.ct)
    assert expected.sum() > 0 and roi.source == "rtstruct"
    seg = hd.seg.segread(write_roi_seg(roi, tmp_path / "roi_seg.dcm"))
    uids = [h.SOPInstanceUID for h in roi.headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0] > 0
    assert np.array_equal(pixels, expected)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


def test_geojson_has_every_tile_with_its_attention_in_level0_px(rendered, patient_report):
    from flows.patients.render import ATTENTION_MEASUREMENT

    gj = json.loads((rendered.parent / "attention.geojson").read_text())
    tiles = patient_report["slide"]["tiles"]
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(tiles) > 10
    att = np.array([t["attention"] for t in tiles])
    n_top = int(np.ceil(0.1 * len(tiles)))
    for f, t in zip(gj["features"], tiles):
        ring = f["geometry"]["coordinates"][0]
        s = t["size_px"]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
        assert ring == [[t["x"], t["y"]], [t["x"] + s, t["y"]], [t["x"] + s, t["y"] + s], [t["x"], t["y"] + s],
                        [t["x"], t["y"]]]
        props = f["properties"]
        assert props["objectType"] == "tile"
        assert props["measurements"][ATTENTION_MEASUREMENT] == t["attention"]
        top = int((att > t["attention"]).sum()) < n_top  # among the n_top largest
        assert props["classification"]["name"] == ("Top attention" if top else "Attention")
    assert sum(f["properties"]["classification"]["name"] == "Top attention" for f in gj["features"]) == n_top
    assert len({f["id"] for f in gj["features"]}) == len(tiles)


def test_every_image_of_the_page_is_an_inline_png(rendered, patient_report):
    from PIL import Image

    page = rendered.read_text(encoding="utf-8")
    srcs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(srcs) == len(re.findall(r"<img ", page)) == 5  # probabilities, contributions, slide, PET/CT, spatial
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    for name in ("probabilities", "contributions", "slide_attention", "pet_ct", "spatial"):
        assert (rendered.parent / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # self-contained: nothing fetched from elsewhere (the two exports are links to the files beside it)
    assert patient_report["patient_id"] in page and "<script" not in page and "<link" not in page
    assert sorted(re.findall(r"href='([^']+)'", page)) == ["attention.geojson", "roi_seg.dcm"]


def test_api_unknown_patient_is_a_404_that_names_it(e2e_run):
    from fastapi.testclient import TestClient

    from flows.serving.api import create_app

    with TestClient(create_app(e2e_run["store"])) as client:
        listed = client.get("/api/patients")
        assert listed.status_code == 200
        assert len(listed.json()) == e2e_run["truth"]["config"]["n_patients"]
        for path in ("/api/patients/TCGA-NO-SUCH", "/api/patients/TCGA-NO-SUCH/report",
                     "/api/patients/TCGA-NO-SUCH/figures/pet_ct.png"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert "'TCGA-NO-SUCH' is not among the" in r.json()["detail"]
        pid = listed.json()[0]["patient_id"]
        r = client.get(f"/api/patients/{pid}/figures/nonsense.png")
        assert r.status_code == 404 and "no figure 'nonsense'" in r.json()["detail"]


def test_page_escapes_what_the_data_says():
    """Names from the data (patient ids, classes, genes) are text, never markup; a report with only a
    prediction renders its two charts and nothing else."""
    from flows.patients.render import report_figures, report_html

    report = {"patient_id": "P<script>alert(1)</script>",
              "diagnosis": {"model": "early:ct", "version": "v1", "predicted": "<b>LUAD</b>",
                            "probabilities": {"<b>LUAD</b>": 0.8, "LUSC": 0.2}},
              "modality_contributions": {"base_value": 0.5, "values": {"ct": 0.3}, "target_class": "<b>LUAD</b>"},
              "slide": None, "radiology": None, "spatial": None, "neighbours": [],
              "targets": [{"gene": "<i>EGFR</i>", "rank": 1, "score": 0.9,
                           "evidence": {"expression_z": 2.5, "copy_number": 1, "mutation": ["Missense_Mutation p.L858R"],
                                        "spatial_enrichment": None}}]}
    figures = report_figures(report, Path("/nonexistent"))
    assert sorted(figures) == ["contributions", "probabilities"]
    page = report_html(report, figures)
    assert "<script>" not in page and "<b>LUAD</b>" not in page and "<i>EGFR</i>" not in page
    assert "P&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;i&gt;EGFR&lt;/i&gt;" in page
    assert "<td>2.500</td>" in page and "<td>Missense_Mutation p.L858R</td>" in page
    assert len(re.findall(r"<img ", page)) == 2


@pytest.mark.parametrize("patient", ["STS_001", "STS_002"])
def test_seg_over_a_real_tcia_ct_decodes_back_to_its_rtstruct_gtv(patient, tmp_path):
    """Real data: the report's SEG writer over a TCIA soft-tissue sarcoma CT with its RTSTRUCT GTV (the rasteriser
    checked against skimage in tests/imaging/test_roi_real.py) decodes back to the same voxels on every CT slice."""
    import highdicom as hd

    from flows.patients.render import RoiOnCt, write_roi_seg
    from imaging.dicom_series import read_dicom_series_headers
    from imaging.segmentation import read_roi_mask
    from tests.realdata import realdata_dir

    root = realdata_dir("dicom", "sts_cropped", patient)
    ct, headers = read_dicom_series_headers(root / "CT" / "image")
    mask = read_roi_mask(root / "CT" / "mask" / "RS.dcm", "GTV_Mass_CT", ct)
    assert mask.sum() > 1000
    seg = hd.seg.segread(write_roi_seg(RoiOnCt(ct, headers, None, mask, "GTV_Mass_CT", "rtstruct"),
                                       tmp_path / "roi_seg.dcm"))
    uids = [h.SOPInstanceUID for h in headers]
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= set(uids)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               ignore_spatial_locations=True)[..., 0] > 0
    assert np.array_equal(pixels, mask)
    assert seg.SegmentSequence[0].SegmentLabel == "GTV_Mass_CT"
