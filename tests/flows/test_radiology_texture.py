"""`fusionrx radiology --roi --texture` on a real STS patient: the IBSI texture families of the GTV, computed by
the one measurement path (mirp behind imaging.radiomics_texture), equal a direct call on the same ROI."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from tests.realdata import realdata_dir


def test_texture_features_of_the_gtv(capsys) -> None:
    from imaging.pet import read_pet_suv
    from imaging.radiomics_texture import texture_features
    from imaging.segmentation import read_roi_mask

    root = realdata_dir("dicom", "sts_cropped", "STS_002")
    assert main(["radiology", str(root / "PET"), "--roi", "GTV_Mass_PET", "--texture", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pet = report["radiomics"]["pet"]
    families = {k.split("_")[0] for k in pet}
    assert {"cm", "rlm", "szm", "dzm", "ngt", "ngl"} <= families  # GLCM GLRLM GLSZM GLDZM NGTDM NGLDM
    suv = read_pet_suv(root / "PET" / "image")
    direct = texture_features(suv, read_roi_mask(root / "PET" / "mask" / "RS.dcm", "GTV_Mass_PET", suv), bin_width=0.5)
    for key in ("cm_joint_max_d1_3d_avg", "szm_sze_3d", "ngt_coarseness_3d"):
        assert key in pet and pet[key] == pytest.approx(direct[key], rel=1e-9)
