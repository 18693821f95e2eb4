"""`fusionrx radiology` on a real patient (TCIA STS_002) scattered in a folder of any layout."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pydicom
import pytest

from flows.cli import main
from tests.imaging.test_radiology_real import _independent
from tests.realdata import realdata_dir


def _source() -> Path:
    return realdata_dir() / "dicom" / "sts_cropped" / "STS_002"


def _scatter(dest: Path, modalities: tuple[str, ...] = ("CT", "PET")) -> Path:
    """Link the patient's files under non-telling names, CT and PET slices mixed in the same folders."""
    files = sorted(f for m in modalities for f in (_source() / m).rglob("*.dcm"))
    for n, f in enumerate(files):
        folder = dest / f"s{n % 3}" / ("x" if n % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IM{n:05d}").symlink_to(f)  # no extension
    (dest / "README.txt").write_text("not DICOM")
    return dest


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict | None, str]:
    code = main(["radiology", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--format" in args else None), err


@pytest.fixture(scope="module")
def independent() -> dict[str, dict]:
    return {m: _independent(_source() / m / "image", _source() / m / "mask" / "RS.dcm") for m in ("CT", "PET")}


def test_roi_statistics_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture, independent: dict) -> None:
    folder, out = _scatter(tmp_path / "patient"), tmp_path / "out"
    code, report, _ = _run(capsys, str(folder), "--roi", "GTV_Mass_PET", "--out", str(out), "--radiomics",
                           "--format", "json")
    assert code == 0
    assert report["patient_id"] == "STS_002"
    assert sorted((s["modality"], s["role"], s["n_files"]) for s in report["series"]) == [("CT", "ct", 48),
                                                                                          ("PT", "pet", 48)]
    assert sorted(report["rois"]) == ["GTV_Mass_CT", "GTV_Mass_PET"]
    ph = report["phenotypes"]
    assert ph["roi"] == "GTV_Mass_PET"
    # PET statistics on the PET grid: the PET contour's own voxels
    assert ph["n_voxels_pet"] == independent["PET"]["n"]
    assert ph["suv_max"] == pytest.approx(independent["PET"]["max"], rel=1e-5)
    assert ph["suv_mean"] == pytest.approx(independent["PET"]["mean"], rel=1e-5)
    # CT statistics on the CT grid: the PET contour lies 0.04 mm from the CT one, so it fills the same CT voxels
    assert ph["volume_ml"] == pytest.approx(independent["CT"]["volume_ml"], rel=1e-3)
    assert ph["ct_mean_hu"] == pytest.approx(independent["CT"]["mean"], abs=0.1)
    assert ph["suv_max"] >= ph["suv_peak"] > ph["suv_mean"] and ph["tlg"] > 0 and 0 < ph["mtv_ml"] < ph["volume_ml"]
    ct_feats, pet_feats = report["radiomics"]["ct"], report["radiomics"]["pet"]
    assert ct_feats["stat_mean"] == pytest.approx(ph["ct_mean_hu"]) and pet_feats["stat_max"] == ph["suv_max"]
    assert ct_feats["morph_vol_approx"] / 1000 == pytest.approx(ph["volume_ml"])
    assert ct_feats["morph_volume"] / 1000 == pytest.approx(ph["volume_ml_mesh"])
    assert pet_feats["loc_peak_loc"] == pytest.approx(ph["suv_peak"]) and "ih_entropy" in pet_feats

    # NIfTI files: RAS affines; voxel (i, j, k) of suv.nii.gz is pixel (row j, column i) of the k-th PET slice
    pet = sorted((pydicom.dcmread(f) for f in (_source() / "PET" / "image").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    suv = nib.load(out / "suv.nii.gz")
    assert suv.shape == (int(pet[0].Columns), int(pet[0].Rows), len(pet))
    x, y, z = (float(v) for v in pet[5].ImagePositionPatient)
    dy, dx = (float(v) for v in pet[5].PixelSpacing)
    assert np.allclose(suv.affine @ [3, 4, 5, 1], [-(x + 3 * dx), -(y + 4 * dy), z, 1], atol=1e-3)
    stored = pet[5].pixel_array[4, 3] * float(pet[5].RescaleSlope) + float(pet[5].RescaleIntercept)
    assert np.asanyarray(suv.dataobj)[3, 4, 5] == pytest.approx(stored, rel=1e-5)
    assert int(np.asanyarray(nib.load(out / "mask_pet.nii.gz").dataobj).sum()) == ph["n_voxels_pet"]
    assert int(np.asanyarray(nib.load(out / "mask_ct.nii.gz").dataobj).sum()) == ph["n_voxels_ct"]
    ct_nii, suv_on_ct = nib.load(out / "ct_hu.nii.gz"), nib.load(out / "suv_on_ct.nii.gz")
    assert suv_on_ct.shape == ct_nii.shape and np.allclose(suv_on_ct.affine, ct_nii.affine)
    png = matplotlib.image.imread(out / "fused.png")
    assert png.shape[0] > 200 and png.shape[1] > 200
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ct_hu.nii.gz", "mask_ct.nii.gz", "suv.nii.gz", "mask_pet.nii.gz", "suv_on_ct.nii.gz", "fused.png"])


def test_pet_only_auto_lesion_and_unknown_roi(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              independent: dict) -> None:
    folder = _scatter(tmp_path / "pet_only", ("PET",))
    code, report, _ = _run(capsys, str(folder), "--roi", "GTV_Mass_PET", "--format", "json")
    assert code == 0
    assert [(s["modality"], s["role"]) for s in report["series"]] == [("PT", "pet")]
    ph = report["phenotypes"]
    assert ph["ct_mean_hu"] is None and ph["volume_ml"] == pytest.approx(independent["PET"]["volume_ml"], rel=1e-6)
    # Without --roi: the 40 % SUVmax component around the hottest voxel, here the tumour's own maximum.
    code, report, _ = _run(capsys, str(folder), "--format", "json")
    assert code == 0 and report["phenotypes"]["roi"] == "auto:pet_40pct_suvmax"
    assert report["phenotypes"]["suv_max"] == pytest.approx(independent["PET"]["max"], rel=1e-5)
    code, _, err = _run(capsys, str(folder), "--roi", "Liver")
    assert code == 2 and "'Liver' not found" in err and "GTV_Mass_PET" in err


def test_a_pet_that_cannot_be_converted_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   independent: dict) -> None:
    folder = _scatter(tmp_path / "patient", ("CT",))  # CT images and the CT RTSTRUCT
    (folder / "pet").mkdir()
    for f in sorted((_source() / "PET" / "image").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.Units = "BQML"  # activity claimed, but no dose / half-life to turn it into SUV
        del ds.RadiopharmaceuticalInformationSequence
        ds.save_as(folder / "pet" / f.name)
    code, report, _ = _run(capsys, str(folder), "--roi", "GTV_Mass_CT", "--format", "json")
    assert code == 0
    assert [s["role"] for s in report["series"] if s["modality"] == "PT"] == [None]
    assert any("RadiopharmaceuticalInformationSequence" in p["error"] for p in report["problems"])
    ph = report["phenotypes"]
    assert ph["suv_max"] is None and ph["n_voxels_ct"] == independent["CT"]["n"]
    assert ph["ct_mean_hu"] == pytest.approx(independent["CT"]["mean"], rel=1e-5)
