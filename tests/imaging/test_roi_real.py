"""measure_rois on the real TCIA soft-tissue sarcoma CT/PET (GE) with their RTSTRUCT GTVs.

The raw whole-body GE PET (BQML, DecayCorrection START) is checked against an independent calculation done
here with pydicom and skimage.draw.polygon only: SUVbw from the DICOM tags by hand, the GTV contours
rasterised slice by slice.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from imaging.phenotypes import roi_phenotypes
from imaging.roi import RoiSpec, measure_rois
from imaging.segmentation import list_rois, read_roi_mask
from tests.realdata import realdata_dir

# skimage.draw.polygon and the pipeline both keep the pixels whose centres lie inside a contour: on this PET
# they select the same 5095 voxels (366.08 ml), so the voxel count must match exactly; SUVs differ only by
# the pipeline's float32 volume (measured: SUVmax 6e-8, SUVmean 3e-8 relative), allowed up to 1e-6.
SUV_RTOL = 1e-6


def _tm(value: str) -> dt.timedelta:
    """DICOM TM 'HHMMSS.frac' -> time of day."""
    text = str(value).strip()
    return dt.timedelta(hours=int(text[:2]), minutes=int(text[2:4]), seconds=float(text[4:] or 0))


def _independent_suv_roi(image_dir: Path, rtstruct: Path, roi_name: str) -> dict[str, float]:
    """GTV voxel count, volume (ml), SUVmax and SUVmean of a BQML PET: pydicom + skimage only."""
    slices = [pydicom.dcmread(f) for f in sorted(image_dir.glob("*.dcm"))]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    first = slices[0]
    assert first.Units == "BQML" and first.DecayCorrection == "START"
    assert [round(float(v), 4) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    # SUVbw = activity (Bq/ml) * weight (g) / (injected dose decayed from injection to the scan start).
    info = first.RadiopharmaceuticalInformationSequence[0]
    scan = min([_tm(first.SeriesTime)] + [_tm(ds.AcquisitionTime) for ds in slices])
    uptake_s = (scan - _tm(info.RadiopharmaceuticalStartTime)).total_seconds()
    decayed_dose = float(info.RadionuclideTotalDose) * 2.0 ** (-uptake_s / float(info.RadionuclideHalfLife))
    scale = float(first.PatientWeight) * 1000.0 / decayed_dose
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    dz = float(np.median(np.diff(z)))
    dy, dx = (float(v) for v in first.PixelSpacing)
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    rows, cols = int(first.Rows), int(first.Columns)

    rs = pydicom.dcmread(rtstruct)
    number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == roi_name)
    contours = next(c for c in rs.ROIContourSequence if int(c.ReferencedROINumber) == number).ContourSequence
    mask = np.zeros((len(slices), rows, cols), dtype=bool)
    for item in contours:
        pts = np.array([float(v) for v in item.ContourData]).reshape(-1, 3)
        k = int(np.argmin(np.abs(z - pts[0, 2])))
        assert abs(z[k] - pts[0, 2]) < 0.5 * dz
        rr, cc = polygon((pts[:, 1] - y0) / dy, (pts[:, 0] - x0) / dx, shape=(rows, cols))
        plane = np.zeros((rows, cols), dtype=bool)
        plane[rr, cc] = True
        mask[k] ^= plane  # a contour inside another on the same plane is a hole
    suv = np.zeros(mask.shape)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        ds = slices[k]
        suv[k] = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)) * scale
    values = suv[mask]
    return {"n": int(mask.sum()), "volume_ml": mask.sum() * dx * dy * dz / 1000.0,
            "suv_max": float(values.max()), "suv_mean": float(values.mean())}


def test_raw_ge_pet_gtv_suv_matches_independent_calculation() -> None:
    root = realdata_dir("dicom", "sts_raw_pet", "STS_001")
    ref = _independent_suv_roi(root / "image", root / "mask" / "1-1.dcm", "GTV_Mass")
    suv = read_pet_suv(root / "image")
    refs = list_rois(root / "mask" / "1-1.dcm")
    assert [r.name for r in refs] == ["GTV_Mass", "GTV_Edema"]
    m = measure_rois(None, suv, refs, RoiSpec.from_config({"pet": ["gtv_mass"]}, fallback="none"))
    ph = m.phenotypes
    assert (m.roi, m.roi_source, m.fallback_used, m.problems) == ("GTV_Mass", "rtstruct", False, [])
    assert ph["n_voxels_pet"] == ref["n"]
    assert ph["volume_ml"] == pytest.approx(ref["volume_ml"], rel=1e-6)  # slice step: affine vs median gap
    assert ph["suv_max"] == pytest.approx(ref["suv_max"], rel=SUV_RTOL)
    assert ph["suv_mean"] == pytest.approx(ref["suv_mean"], rel=SUV_RTOL)
    assert m.totals["n_lesions"] == 1 and m.totals["total_mtv_ml"] == pytest.approx(ph["mtv_ml"])


@pytest.mark.parametrize("patient", ["STS_001", "STS_002"])
def test_cropped_ct_pet_each_grid_takes_its_own_gtv(patient: str) -> None:
    root = realdata_dir("dicom", "sts_cropped", patient)
    ct, suv = read_dicom_series(root / "CT" / "image"), read_pet_suv(root / "PET" / "image")
    ct_rs, pet_rs = root / "CT" / "mask" / "RS.dcm", root / "PET" / "mask" / "RS.dcm"
    refs = list_rois(ct_rs) + list_rois(pet_rs)
    spec = RoiSpec.from_config({"ct": ["GTV*_CT"], "pet": ["GTV*_PET"]}, fallback="none")
    m = measure_rois(ct, suv, refs, spec)
    assert m.roi == "GTV_Mass_CT + GTV_Mass_PET" and m.roi_source == "rtstruct" and m.problems == []
    ct_mask, pet_mask = read_roi_mask(ct_rs, "GTV_Mass_CT", ct), read_roi_mask(pet_rs, "GTV_Mass_PET", suv)
    assert np.array_equal(m.ct_mask, ct_mask) and np.array_equal(m.pet_mask, pet_mask)
    expected = roi_phenotypes(ct, ct_mask, suv, pet_mask)
    for key, value in expected.items():
        assert m.phenotypes[key] == pytest.approx(value, nan_ok=True), key
    assert [(r["name"], r["matched_by"]) for r in m.lesions] == [("GTV_Mass_CT", "ct"), ("GTV_Mass_PET", "pet")]
    pet_row = m.lesions[1]
    assert m.totals["total_mtv_ml"] == pytest.approx(pet_row["mtv_ml"])  # the CT-matched row is not PET's total
    assert math.isfinite(m.totals["total_tlg"]) and m.totals["total_tlg"] == pytest.approx(pet_row["tlg"])
