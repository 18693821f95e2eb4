"""The generated cohort: real formats that read back to the planted truth."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import openslide
import pytest

from flows.catalog.schema import load_catalog
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.phenotypes import segment_lung_tumour, tumour_phenotypes
from imaging.resample import resample_to_reference


@pytest.fixture(scope="module")
def truth(small_cohort):
    return json.loads((small_cohort / "truth.json").read_text())


def test_catalog_validates_and_truth_is_separate(small_cohort, truth):
    cat = load_catalog(small_cohort / "data_catalog.yaml")
    assert len(cat.sources) == 9
    assert all("truth" not in str(s.path) for s in cat.sources.values())
    assert len(truth["targets"]) == 4 and len(truth["subtype"]) == 12


def test_ct_series_reads_back_planted_hu(small_cohort, truth):
    pid = sorted(truth["imaging"])[0]
    planted = truth["imaging"][pid]["ct"]
    ct = read_ct(planted["series_dir"])
    assert ct.units == "HU" and ct.shape == tuple(planted["shape"])
    tumour = segment_lung_tumour(ct)
    assert np.median(ct.array[tumour]) == pytest.approx(planted["tumour_hu"], abs=5)
    # the voxel nearest the planted centre is tumour; the affine maps it back to the planted point
    k, j, i = np.rint(ct.voxel_coords(np.asarray(planted["tumour_centre_mm"]))).astype(int)
    assert tumour[k, j, i]
    assert ct.array[0, 0, 0] == pytest.approx(planted["air_hu"], abs=50)


def test_pet_series_reads_back_planted_suv(small_cohort, truth):
    pid = next(p for p in sorted(truth["imaging"]) if truth["layouts"]["pet_units"].get(p) == "BQML")
    planted = truth["imaging"][pid]["pet"]
    suv = read_pet_suv(planted["series_dir"])
    assert suv.units == "SUVbw"
    # by hand: SUV = activity [Bq/ml] * weight [g] / (dose [Bq] * 2^(-t/T_half))
    decayed = planted["dose_bq"] * 2.0 ** (-planted["injection_to_scan_s"] / planted["half_life_s"])
    suv_by_hand = planted["tumour_bq_per_ml"] * planted["weight_kg"] * 1000.0 / decayed
    assert suv_by_hand == pytest.approx(planted["tumour_suv"], rel=1e-6)
    k, j, i = np.rint(suv.voxel_coords(np.asarray(planted["tumour_centre_mm"]))).astype(int)
    assert suv.array[k, j, i] == pytest.approx(planted["tumour_suv"], rel=0.05)
    ct = read_ct(truth["imaging"][pid]["ct"]["series_dir"])
    phen = tumour_phenotypes(ct, resample_to_reference(suv, ct))
    assert phen["suv_max"] == pytest.approx(planted["tumour_suv"], rel=0.1)
    r = truth["imaging"][pid]["tumour_radius_mm"]
    assert phen["ct_tumour_volume_ml"] == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=0.2)


def test_slides_open_at_every_level(small_cohort, truth):
    for pid in truth["modalities_present"]["wsi"]:
        path = next((small_cohort / "slides").glob(f"{pid}*.tiff"))
        with openslide.OpenSlide(str(path)) as slide:
            assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5, rel=1e-3)
            w0, h0 = slide.dimensions
            assert slide.level_count >= 3
            for level in range(slide.level_count):
                w, h = slide.level_dimensions[level]
                assert (w, h) == (w0 // 2**level, h0 // 2**level)
                region = np.asarray(slide.read_region((0, 0), level, (32, 32)).convert("RGB"))
                assert region.mean() > 200  # the corner is background glass


def test_spatial_samples_sit_on_their_slide(small_cohort, truth):
    for pid in sorted(set(truth["modalities_present"]["spatial"]) - set(truth["layouts"]["spaceranger"])):
        a = ad.read_h5ad(small_cohort / "spatial" / f"{pid}.h5ad")
        cx, cy, rx, ry = truth["slides"][pid]["tissue_ellipse"]
        xy = np.asarray(a.obsm["spatial"])
        assert (((xy[:, 0] - cx) / rx) ** 2 + ((xy[:, 1] - cy) / ry) ** 2 <= 1.0 + 1e-9).all()
        assert a.uns["patient_id"] == pid


# ------------------------------------------------------------------------ realistic layouts
def _pixel_values(series_dir):
    """Per file: (dataset, stored * RescaleSlope + RescaleIntercept) read with plain pydicom."""
    import pydicom
    from pathlib import Path

    out = []
    for f in sorted(Path(series_dir).glob("*.dcm")):
        ds = pydicom.dcmread(f)
        out.append((ds, ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
    return out


def test_vendor_pet_variants_store_the_planted_suv(small_cohort, truth):
    units = truth["layouts"]["pet_units"]
    assert {"GML", "CNTS"} <= set(units.values())
    checked = set()
    for pid, u in units.items():
        planted = truth["imaging"][pid]["pet"]
        slices = _pixel_values(planted["series_dir"])
        assert all(ds.Units == u for ds, _ in slices)
        values = np.concatenate([v.ravel() for _, v in slices])
        if u == "GML":  # already SUVbw: the soft-tissue background is exactly 1 g/ml
            suv = values
        elif u == "CNTS":  # Philips: counts x private SUV factor = SUVbw; x activity factor = Bq/ml
            ds = slices[0][0]
            block = ds.private_block(0x7053, "Philips PET Private Group")
            suv = values * float(block[0x00].value)
            bq = values * float(block[0x09].value)
            assert np.median(bq[bq > 0.5 * bq.max() / planted["tumour_suv"]]) == pytest.approx(
                planted["bq_per_ml_per_suv"] * planted["background_suv"], rel=2e-3)
        else:  # BQML: SUV = Bq/ml * weight_g / decayed dose, by hand
            suv = values / planted["bq_per_ml_per_suv"]
        body = suv[suv > 0.6]
        assert np.median(body) == pytest.approx(planted["background_suv"], rel=2e-3), (pid, u)
        assert suv.max() <= planted["tumour_suv"] * 1.002
        # and the project's reader (QIBA SUV for every vendor) gives the planted truth back
        volume = read_pet_suv(planted["series_dir"])
        assert volume.units == "SUVbw"
        if truth["imaging"][pid]["tumour_radius_mm"] < 6.0:
            continue  # a sphere under 1.5 PET voxels in radius: partial volume lowers the centre voxel
        k, j, i = np.rint(volume.voxel_coords(np.asarray(planted["tumour_centre_mm"]))).astype(int)
        assert volume.array[k, j, i] == pytest.approx(planted["tumour_suv"], rel=0.05), (pid, u)
        checked.add(u)
    assert checked == set(units.values())  # every vendor variant checked at a tumour centre


def test_rtstruct_contours_are_the_planted_sphere(small_cohort, truth):
    import pydicom
    from pathlib import Path

    pid = sorted(truth["imaging"])[0]
    t = truth["imaging"][pid]
    rs = pydicom.dcmread(t["rtstruct"]["path"])
    assert rs.Modality == "RTSTRUCT" and rs.StructureSetROISequence[0].ROIName == "GTV"
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == t["ct"]["frame_of_reference_uid"]
    ct_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
               for f in Path(t["ct"]["series_dir"]).glob("*.dcm")}
    centre, r = np.asarray(t["tumour_centre_mm"]), t["tumour_radius_mm"]
    area_mm2 = 0.0
    for c in rs.ROIContourSequence[0].ContourSequence:
        assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in ct_uids
        pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
        np.testing.assert_allclose(np.linalg.norm(pts - centre, axis=1), r, atol=1e-3)
        x, y = pts[:, 0], pts[:, 1]
        area_mm2 += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    volume_ml = area_mm2 * t["ct"]["slice_thickness_mm"] / 1000.0
    assert volume_ml == pytest.approx(4 / 3 * np.pi * r**3 / 1000.0, rel=0.15)


def test_gdc_download_layout_reads_back(small_cohort, truth):
    import gzip

    from omics.gdc import read_sample_sheet
    from omics.gdc_download import read_copy_number_download, read_maf_download

    sheet_path = next((small_cohort / "omics").glob("gdc_sample_sheet.*.tsv"))
    sheet = read_sample_sheet(sheet_path)
    assert "Sample Type" not in sheet_path.read_text().splitlines()[0]  # portal 2.0 columns
    mafs = sheet.loc[sheet["Data Type"] == "Masked Somatic Mutation"]
    for fid, name in zip(mafs["File ID"], mafs["File Name"]):
        path = small_cohort / "omics" / "gdc_download" / fid / name
        assert name.endswith(".maf.gz") and (path.parent / "logs" / f"{name}.parcel").is_file()
        assert gzip.decompress(path.read_bytes()).startswith(b"#version gdc-2.0.0-aliquot-merged-masked\n")
    maf, errors = read_maf_download(sheet_path, small_cohort / "omics" / "gdc_download")
    assert errors == [] and maf["Tumor_Sample_Barcode"].nunique() == len(mafs)
    cn, errors = read_copy_number_download(sheet_path, small_cohort / "omics" / "gdc_download")
    assert errors == [] and sorted(cn.columns) == sorted(truth["subtype"])
    for g in truth["targets"]:  # planted amplifications only: calls 0, 1 or 2, never losses
        assert set(cn.loc[g].unique()) <= {0, 1, 2}


def test_catalog_is_the_scan_of_the_cohort(small_cohort, truth):
    cat = load_catalog(small_cohort / "data_catalog.yaml")
    assert cat.by_modality("ct").format == "dicom" and cat.by_modality("mutations").format == "gdc_maf_download"
    from flows.stages.radiology import discover_radiology

    cts, pets, skipped, _ = discover_radiology(cat.by_modality("ct"), cat.by_modality("pet"))
    assert skipped == []
    assert {p: str(d) for p, d in cts.items()} == {p: t["ct"]["series_dir"] for p, t in truth["imaging"].items()}
    assert {p: str(d) for p, d in pets.items()} == {p: t["pet"]["series_dir"] for p, t in truth["imaging"].items()
                                                     if "pet" in t}


def test_spaceranger_folder_reads_with_scanpy(tmp_path):
    import scanpy as sc

    from flows.synthetic.spatial_writer import hex_spot_grid, write_spaceranger_folder

    rng = np.random.default_rng(0)
    coords, arow, acol = hex_spot_grid((0, 0, 600, 500), 100)
    counts = rng.integers(0, 20, size=(len(coords), 5))
    image = rng.integers(0, 255, size=(125, 150, 3), dtype=np.uint8)
    out = write_spaceranger_folder(tmp_path / "S1" / "outs", counts=counts, gene_names=list("ABCDE"),
                                   gene_ids=[f"ENSG{i}" for i in range(5)], pixel_coords_fullres=coords,
                                   array_row=arow, array_col=acol, hires_image=image, tissue_hires_scalef=0.25,
                                   spot_diameter_fullres=55.0)
    a = sc.read_visium(out)
    assert a.shape == counts.shape and list(a.var_names) == list("ABCDE")
    np.testing.assert_array_equal(a.X.toarray(), counts)
    np.testing.assert_allclose(a.obsm["spatial"], np.rint(coords))  # (x, y) full-resolution pixels
    lib = next(iter(a.uns["spatial"].values()))
    assert lib["scalefactors"]["tissue_hires_scalef"] == 0.25 and lib["images"]["hires"].shape[:2] == (125, 150)
