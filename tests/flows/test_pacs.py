"""PACS doors against a real Orthanc (DICOMweb + DIMSE): pulled studies equal the files on disk, a second
pull pulls nothing, a PACS stopped mid-pull names the failed studies and a later pull completes them."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from flows.pacs import pull_dicomweb, pull_dimse, pulled_sop_uids
from fusion.errors import PacsError
from tests.flows.orthanc import Orthanc, require_orthanc
from tests.realdata import realdata_dir

pytestmark = pytest.mark.slow  # a real Orthanc PACS started for the module


def _dicom_files(root: Path) -> dict[tuple[str, str], list[Path]]:
    """(PatientID, Modality) -> files, by header (any layout, any file names)."""
    out: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["PatientID", "Modality"])
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if "Modality" in ds:
            out[(str(ds.PatientID), str(ds.Modality))].append(f)
    return out


@pytest.fixture(scope="module")
def pacs_data(small_cohort) -> dict:
    """Two generated patients' CT + PET and the real STS_001 CT/PET/RTSTRUCT."""
    generated = _dicom_files(small_cohort)
    pids = sorted({pid for pid, mod in generated if (pid, "PT") in generated and (pid, "CT") in generated})[:2]
    sts = _dicom_files(realdata_dir("dicom", "sts_cropped", "STS_001"))
    files = [f for pid in pids for mod in ("CT", "PT") for f in generated[(pid, mod)]]
    files += [f for fs in sts.values() for f in fs]
    return {"generated_pids": pids, "files": files, "sts_pid": next(iter(sts))[0],
            "sop_uids": {str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID): f
                         for f in files}}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, pacs_data):
    require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    server.upload(pacs_data["files"])
    yield server
    server.stop()


def _series_dirs(root: Path, modality: str) -> dict[str, Path]:
    """PatientID -> folder of its series of `modality` (pulled layout: one folder per series)."""
    return {pid: files[0].parent for (pid, mod), files in _dicom_files(root).items() if mod == modality}


def _same_instances(pulled: Path, pacs_data: dict) -> None:
    got = pulled_sop_uids(pulled)
    assert got == set(pacs_data["sop_uids"])
    for path in sorted(pulled.rglob("*.dcm"))[::7]:
        a, b = pydicom.dcmread(path), pydicom.dcmread(pacs_data["sop_uids"][path.stem])
        assert a.SeriesInstanceUID == b.SeriesInstanceUID
        if "PixelData" in b:
            np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
        if "ROIContourSequence" in b:
            assert [c.ContourData for r in a.ROIContourSequence for c in r.ContourSequence] == \
                   [c.ContourData for r in b.ROIContourSequence for c in r.ContourSequence]


def _radiology(ct_dir: Path, pet_dir: Path, out: Path, pid: str) -> dict:
    from flows.stages.radiology import ingest_radiology

    return ingest_radiology(pid, ct_dir, pet_dir, out, 16, 2.0).phenotypes


def test_dicomweb_pull_equals_disk_and_second_pull_pulls_nothing(orthanc, pacs_data, tmp_path):
    out = tmp_path / "pulled"
    first = pull_dicomweb(orthanc.dicomweb, out).to_dict()
    n = len(pacs_data["files"])
    assert first["failed"] == [] and first["pulled"] == n and first["n_studies"] == 3
    _same_instances(out, pacs_data)
    # the pipeline's radiology on the pulled folders equals the same on the files on disk
    disk_ct, disk_pet = (_series_dirs(pacs_data["files"][0].parents[3], m) for m in ("CT", "PT"))
    pulled_ct, pulled_pet = _series_dirs(out, "CT"), _series_dirs(out, "PT")
    for pid in pacs_data["generated_pids"]:
        disk_ct_dir = next(f.parent for f in pacs_data["files"] if pid in str(f) and pydicom.dcmread(
            f, stop_before_pixels=True).Modality == "CT")
        disk_pet_dir = next(f.parent for f in pacs_data["files"] if pid in str(f) and pydicom.dcmread(
            f, stop_before_pixels=True).Modality == "PT")
        a = _radiology(pulled_ct[pid], pulled_pet[pid], tmp_path / "rad_pulled", pid)
        b = _radiology(disk_ct_dir, disk_pet_dir, tmp_path / "rad_disk", pid)
        assert a == b and a["suv_max"] > 0
    del disk_ct, disk_pet
    second = pull_dicomweb(orthanc.dicomweb, out).to_dict()
    assert second["pulled"] == 0 and second["already_present"] == n and second["failed"] == []
    # one deleted instance is the only one pulled again
    victim = sorted(out.rglob("*.dcm"))[3]
    victim.unlink()
    third = pull_dicomweb(orthanc.dicomweb, out, patient_id=pacs_data["sts_pid"]).to_dict()
    assert third["n_studies"] == 1
    assert (third["pulled"], victim.exists()) == ((1, True) if pacs_data["sts_pid"] in str(pydicom.dcmread(
        pacs_data["sop_uids"][victim.stem], stop_before_pixels=True).PatientID) else (0, False))


def test_dimse_cfind_cget_equals_disk(orthanc, pacs_data, tmp_path):
    out = tmp_path / "pulled_dimse"
    report = pull_dimse("127.0.0.1", orthanc.dicom_port, out).to_dict()
    assert report["failed"] == [] and report["pulled"] == len(pacs_data["files"])
    _same_instances(out, pacs_data)
    again = pull_dimse("127.0.0.1", orthanc.dicom_port, out).to_dict()
    assert again["pulled"] == 0


def test_pacs_stopped_mid_pull_names_failed_studies_and_later_pull_completes(tmp_path, pacs_data):
    require_orthanc()
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        server.upload(pacs_data["files"])
        out = tmp_path / "pulled"
        done: list[str] = []

        def stop_after_first(res):
            done.append(res.study_uid)
            if len(done) == 1:
                server.stop()

        report = pull_dicomweb(server.dicomweb, out, on_study_done=stop_after_first, attempts=2, backoff_s=0.05, timeout_s=5).to_dict()
        assert len(report["failed"]) == 2 and report["studies"][0]["error"] is None
        for f in report["failed"]:
            assert f["study_uid"] in f["error"] or "series" in f["error"]
            assert "ConnectionError" in f["error"] and server.dicomweb in f["error"]
        server.start()
        again = pull_dicomweb(server.dicomweb, out).to_dict()
        assert again["failed"] == [] and again["pulled"] == len(pacs_data["files"]) - report["pulled"]
        assert again["already_present"] == report["pulled"]
        _same_instances(out, pacs_data)
    finally:
        server.stop()


def test_dicomweb_auth_from_environment(tmp_path, pacs_data, monkeypatch):
    require_orthanc()
    server = Orthanc(tmp_path / "orthanc", users={"radiology": "s3cret"}).start()
    try:
        server.upload(pacs_data["files"][:3])
        monkeypatch.delenv("FUSIONRX_DICOMWEB_USER", raising=False)
        with pytest.raises(PacsError, match="HTTP 401.*FUSIONRX_DICOMWEB_USER"):
            pull_dicomweb(server.dicomweb, tmp_path / "denied")
        monkeypatch.setenv("FUSIONRX_DICOMWEB_USER", "radiology")
        monkeypatch.setenv("FUSIONRX_DICOMWEB_PASSWORD", "s3cret")
        assert pull_dicomweb(server.dicomweb, tmp_path / "ok").pulled >= 1
    finally:
        server.stop()


def test_pull_command_json(orthanc, pacs_data, tmp_path, capsys):
    from flows.cli import main

    rc = main(["pull", "--dicomweb", orthanc.dicomweb, "--patient", pacs_data["sts_pid"], "--out", str(tmp_path / "p"),
               "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_studies"] == 1 and out["pulled"] > 0 and out["instances_per_s"] > 0
    assert rc == 0 and main(["pull", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", str(tmp_path / "q")]) == 2


def test_catalog_dicomweb_source_is_pulled_into_the_store_then_read_like_a_folder(orthanc, pacs_data, small_cohort,
                                                                                  tmp_path):
    import yaml

    from flows.catalog.schema import load_catalog
    from flows.pacs.source import pull_remote_sources
    from flows.stages.radiology import discover_radiology

    doc = yaml.safe_load((small_cohort / "data_catalog.yaml").read_text())
    doc["root"] = str((small_cohort / doc.get("root", ".")).resolve())
    doc["sources"] = {k: v for k, v in doc["sources"].items() if v["modality"] not in ("ct", "pet")}
    doc["sources"]["pacs"] = {"modality": "ct", "format": "dicomweb", "url": orthanc.dicomweb}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    catalog = load_catalog(tmp_path / "c.yaml")
    store = tmp_path / "store"
    local, skipped = pull_remote_sources(catalog, store)
    assert skipped == [] and local.sources["pacs"].format == "dicom"
    assert local.sources["pacs"].path == store / "raw" / "pacs"
    cts, pets, _, _ = discover_radiology(local.sources["pacs"], None)
    assert set(pacs_data["generated_pids"]) <= set(cts) and set(pacs_data["generated_pids"]) <= set(pets)
    # a PACS that cannot be reached is a skip record naming it; what was pulled before stays usable
    doc["sources"]["pacs"]["url"] = "http://127.0.0.1:9/dicom-web"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    again, skipped = pull_remote_sources(load_catalog(tmp_path / "c.yaml"), store)
    assert len(skipped) == 1 and "127.0.0.1:9" in skipped[0].error + skipped[0].file
    assert set(discover_radiology(again.sources["pacs"], None)[0]) == set(cts)
    # credentials in a catalog are refused
    doc["sources"]["pacs"]["password"] = "s3cret"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    from fusion.errors import CatalogError

    with pytest.raises(CatalogError, match="credentials never go in a catalog"):
        load_catalog(tmp_path / "c.yaml")
