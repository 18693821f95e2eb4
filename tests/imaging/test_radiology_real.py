"""Real TCIA soft-tissue sarcoma CT/PET (GE) with RTSTRUCTs that reference absent, uncropped images.

Each ROI statistic is checked against an independent calculation done here with plain pydicom and
matplotlib: pixel centres from ImagePositionPatient / PixelSpacing, each contour filled with
`Path.contains_points` on the slice whose z is nearest, holes by XOR, values = stored * slope + intercept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as PolygonPath

from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from imaging.phenotypes import roi_phenotypes
from imaging.segmentation import read_roi_mask
from tests.realdata import realdata_dir

# Agreement required between the pipeline and the independent calculation: both fill by the voxel-centre
# rule, so the voxel sets are identical on these files (a contour vertex exactly on a voxel centre could
# flip one voxel elsewhere); means differ only by float32 summation.
MEAN_RTOL = 1e-5


def _independent(image_dir: Path, rtstruct: Path) -> dict[str, float]:
    """ROI voxel count, volume (ml), max and mean of the rescaled values, from pydicom + matplotlib only."""
    slices = []
    for f in sorted(image_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert [round(float(v), 4) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]  # axial, no tilt
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append((float(ds.ImagePositionPatient[2]), ds, values))
    slices.sort(key=lambda s: s[0])
    z = np.array([s[0] for s in slices])
    ref = slices[0][1]
    rows, cols = int(ref.Rows), int(ref.Columns)
    dy, dx = (float(v) for v in ref.PixelSpacing)
    x0, y0 = float(ref.ImagePositionPatient[0]), float(ref.ImagePositionPatient[1])
    jj, ii = np.mgrid[0:rows, 0:cols]
    centres = np.stack([x0 + ii.ravel() * dx, y0 + jj.ravel() * dy], axis=1)
    mask = np.zeros((len(slices), rows, cols), dtype=bool)
    rs = pydicom.dcmread(rtstruct)
    for item in rs.ROIContourSequence[0].ContourSequence:
        raw = item.get_item("ContourData").value  # DS text "x\\y\\z\\..." (pydicom's DS objects are slow)
        pts = np.array(raw.decode().split("\\"), dtype=np.float64).reshape(-1, 3)
        k = int(np.argmin(np.abs(z - pts[0, 2])))
        assert abs(z[k] - pts[0, 2]) < 0.5 * np.median(np.diff(z))
        near = ((centres[:, 0] >= pts[:, 0].min() - dx) & (centres[:, 0] <= pts[:, 0].max() + dx)
                & (centres[:, 1] >= pts[:, 1].min() - dy) & (centres[:, 1] <= pts[:, 1].max() + dy))
        inside = np.zeros(len(centres), dtype=bool)
        inside[near] = PolygonPath(pts[:, :2]).contains_points(centres[near])
        mask[k] ^= inside.reshape(rows, cols)
    values = np.stack([s[2] for s in slices])[mask]
    n = int(mask.sum())
    return {"n": n, "volume_ml": n * dx * dy * float(np.median(np.diff(z))) / 1000.0,
            "max": float(values.max()), "mean": float(values.mean())}


@pytest.fixture(scope="module", params=["STS_001", "STS_002"])
def patient(request: pytest.FixtureRequest) -> dict:
    root = realdata_dir() / "dicom" / "sts_cropped" / request.param
    ct = read_dicom_series(root / "CT" / "image")
    suv = read_pet_suv(root / "PET" / "image")
    ct_mask = read_roi_mask(root / "CT" / "mask" / "RS.dcm", "GTV_Mass_CT", ct)
    pet_mask = read_roi_mask(root / "PET" / "mask" / "RS.dcm", "GTV_Mass_PET", suv)
    return {"root": root, "ct": ct, "suv": suv, "ct_mask": ct_mask, "pet_mask": pet_mask,
            "phen": roi_phenotypes(ct, ct_mask, suv, pet_mask)}


def test_ct_roi_volume_and_mean_hu_match_independent_calculation(patient: dict) -> None:
    root = patient["root"]
    ref = _independent(root / "CT" / "image", root / "CT" / "mask" / "RS.dcm")
    phen = patient["phen"]
    assert patient["ct"].units == "HU"
    assert phen["n_voxels_ct"] == ref["n"]
    assert phen["volume_ml_ct"] == pytest.approx(ref["volume_ml"], rel=1e-6)
    assert phen["ct_mean_hu"] == pytest.approx(ref["mean"], rel=MEAN_RTOL)
    assert phen["volume_ml_mesh"] == pytest.approx(ref["volume_ml"], rel=0.02)  # IBSI mesh vs voxel count


def test_pet_roi_suv_match_independent_calculation(patient: dict) -> None:
    root = patient["root"]
    ref = _independent(root / "PET" / "image", root / "PET" / "mask" / "RS.dcm")  # Units GML: values are SUVbw
    phen = patient["phen"]
    assert patient["suv"].units == "SUVbw"
    assert phen["n_voxels_pet"] == ref["n"]
    assert phen["volume_ml_pet"] == pytest.approx(ref["volume_ml"], rel=1e-6)
    assert phen["suv_max"] == pytest.approx(ref["max"], rel=1e-5)
    assert phen["suv_mean"] == pytest.approx(ref["mean"], rel=MEAN_RTOL)
    assert phen["suv_max"] >= phen["suv_peak_global"] >= phen["suv_peak"] > phen["suv_mean"]
    assert phen["tlg"] == pytest.approx(phen["mtv_ml"] * np.mean(
        patient["suv"].array[patient["pet_mask"] & (patient["suv"].array >= 0.4 * phen["suv_max"])]), rel=1e-6)


def test_ct_and_pet_contours_describe_the_same_tumour(patient: dict) -> None:
    """GTV_Mass_CT rasterised on the PET grid (4.7-5.5 mm pixels) covers the same volume as GTV_Mass_PET there."""
    root, suv = patient["root"], patient["suv"]
    ct_roi_on_pet = read_roi_mask(root / "CT" / "mask" / "RS.dcm", "GTV_Mass_CT", suv)
    overlap = (ct_roi_on_pet & patient["pet_mask"]).sum() / patient["pet_mask"].sum()
    assert overlap > 0.98
    assert ct_roi_on_pet.sum() * suv.voxel_volume_ml == pytest.approx(patient["phen"]["volume_ml_ct"], rel=0.03)


def test_raw_whole_body_bqml_pet_gives_the_same_tumour_suv() -> None:
    """Raw GE PET (267 slices, BQML, decay START): SUVbw computed here, GTV_Mass placed on the whole-body grid
    by coordinates, reproduce the SUVs of the curated crop that MIRP converted to GML (STS_001)."""
    root = realdata_dir() / "dicom"
    raw = read_pet_suv(root / "sts_raw_pet" / "STS_001" / "image")
    raw_mask = read_roi_mask(root / "sts_raw_pet" / "STS_001" / "mask" / "1-1.dcm", "GTV_Mass", raw)
    crop = read_pet_suv(root / "sts_cropped" / "STS_001" / "PET" / "image")
    crop_mask = read_roi_mask(root / "sts_cropped" / "STS_001" / "PET" / "mask" / "RS.dcm", "GTV_Mass_PET", crop)
    ours, curated = roi_phenotypes(None, None, raw, raw_mask), roi_phenotypes(None, None, crop, crop_mask)
    assert raw.shape[0] == 267 and raw_mask.sum() == crop_mask.sum()
    for key in ("suv_max", "suv_mean", "suv_peak", "mtv_ml"):
        assert ours[key] == pytest.approx(curated[key], rel=1e-3), key
