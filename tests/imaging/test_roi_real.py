"""measure_rois on the real TCIA soft-tissue sarcoma CT/PET (GE) with their RTSTRUCT GTVs.

The raw whole-body GE PET (BQML, DecayCorrection START) is checked against an independent calculation done
here with pydicom and skimage.draw.polygon only: SUVbw from the DICOM tags by hand, the GTV contours
rasterised slice by slice.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from imaging.phenotypes import roi_phenotypes
from imaging.roi import RoiSpec, measure_rois
from imaging.segmentation import list_rois, read_roi_mask
from tests.realdata import realdata_dir
from tests.independent_roi import independent_roi

# skimage.draw.polygon and the pipeline both keep the pixels whose centres lie inside a contour: on this PET
# they select the same 5095 voxels (366.08 ml), so the voxel count must match exactly; SUVs differ only by
# the pipeline's float32 volume (measured: SUVmax 6e-8, SUVmean 3e-8 relative), allowed up to 1e-6.
SUV_RTOL = 1e-6


def test_raw_ge_pet_gtv_suv_matches_independent_calculation() -> None:
    root = realdata_dir("dicom", "sts_raw_pet", "STS_001")
    ref = independent_roi(root / "image", root / "mask" / "1-1.dcm", "GTV_Mass")
    suv = read_pet_suv(root / "image")
    refs = list_rois(root / "mask" / "1-1.dcm")
    assert [r.name for r in refs] == ["GTV_Mass", "GTV_Edema"]
    m = measure_rois(None, suv, refs, RoiSpec.from_config({"pet": ["gtv_mass"]}, fallback="none"))
    ph = m.phenotypes
    assert (m.roi, m.roi_source, m.fallback_used, m.problems) == ("GTV_Mass", "rtstruct", False, [])
    assert ph["n_voxels_pet"] == ref["n"]
    assert ph["volume_ml"] == pytest.approx(ref["volume_ml"], rel=1e-6)  # slice step: affine vs median gap
    assert ph["suv_max"] == pytest.approx(ref["max"], rel=SUV_RTOL)
    assert ph["suv_mean"] == pytest.approx(ref["mean"], rel=SUV_RTOL)
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
