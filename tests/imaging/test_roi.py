"""ROI choice and measurement (imaging.roi) on a hand-built chest phantom with known answers.

CT: 2 mm voxels (12, 32, 32); PET: 4 mm voxels (6, 16, 16) whose voxel [m, n, o] covers exactly CT voxels
[2m:2m+2, 2n:2n+2, 2o:2o+2]. GTV_primary is the CT box [4:8, 8:12, 8:12] (PET box [2:4, 4:6, 4:6]), GTV_node
the CT box [2:4, 20:24, 20:24] (PET box [1:2, 10:12, 10:12]); both 40 HU in an air-filled lung; PET 5 SUV in
the primary with one 12 SUV voxel, 3 SUV in the node, 1 SUV elsewhere and a 30 SUV decoy far from both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusion.errors import CatalogError
from imaging.roi import (
    AUTO_CT_LABEL,
    AUTO_PET_LABEL,
    RoiSpec,
    auto_lesion,
    mask_to_grid,
    match_rois,
    measure_rois,
    roi_centroid_mm,
)
from imaging.segmentation import RoiRef, list_rois
from imaging.volume import Volume
from tests.imaging.dicom_writers import write_rtstruct

FOR_UID = "1.2.826.0.1.3680043.8.498.31"
ORIGIN = np.array([-30.0, -40.0, 100.0])  # LPS mm of CT voxel [0, 0, 0]
PRIMARY_CT, PRIMARY_PET = np.s_[4:8, 8:12, 8:12], np.s_[2:4, 4:6, 4:6]
NODE_CT, NODE_PET = np.s_[2:4, 20:24, 20:24], np.s_[1:2, 10:12, 10:12]
DECOY_PET = (5, 14, 2)
ML = 0.512  # primary: 64 CT voxels of 8 mm^3 = 8 PET voxels of 64 mm^3


def _grid(spacing: float, shape: tuple[int, int, int], shift: float, array: np.ndarray, units: str) -> Volume:
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = [0, 0, spacing], [0, spacing, 0], [spacing, 0, 0]
    affine[:3, 3] = ORIGIN + shift
    return Volume(array.reshape(shape), affine, units, {"frame_of_reference_uid": FOR_UID})


def _ct() -> Volume:
    hu = np.full((12, 32, 32), -1000.0)
    hu[:, 2:30, 2:30] = 0.0  # body
    hu[:, 6:26, 6:26] = -800.0  # lung
    hu[PRIMARY_CT] = hu[NODE_CT] = 40.0
    return _grid(2.0, hu.shape, 0.0, hu, "HU")


def _suv() -> Volume:
    suv = np.ones((6, 16, 16))
    suv[PRIMARY_PET] = 5.0
    suv[2, 4, 4] = 12.0
    suv[NODE_PET] = 3.0
    suv[DECOY_PET] = 30.0
    return _grid(4.0, suv.shape, 1.0, suv, "SUVbw")


def _box_contours(box: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """One square per CT slice of a CT-index box, its edges on the voxel boundaries (LPS mm)."""
    ks, js, is_ = box
    x0, x1 = ORIGIN[0] + 2.0 * (is_.start - 0.5), ORIGIN[0] + 2.0 * (is_.stop - 0.5)
    y0, y1 = ORIGIN[1] + 2.0 * (js.start - 0.5), ORIGIN[1] + 2.0 * (js.stop - 0.5)
    return [np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
            for z in ORIGIN[2] + 2.0 * np.arange(ks.start, ks.stop)]


def _write_rtstruct(path: Path, rois: dict[str, list[np.ndarray]], for_uid: str = FOR_UID) -> Path:
    return write_rtstruct(path, rois, for_uid, frame_sequence=False)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = _write_rtstruct(tmp_path_factory.mktemp("roi") / "rs.dcm", {
        "Lung_L": [], "GTV_primary": _box_contours(PRIMARY_CT), "gtv_Node": _box_contours(NODE_CT)})
    return {"ct": _ct(), "suv": _suv(), "refs": list_rois(path), "path": str(path)}


def _box(shape: tuple[int, int, int], box) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box] = True
    return mask


@pytest.mark.parametrize("value, patterns, fallback", [
    (None, {}, "auto"),
    (["GTV*", "tumour"], {"ct": ("GTV*", "tumour"), "pet": ("GTV*", "tumour")}, "auto"),
    ("GTV", {"ct": ("GTV",), "pet": ("GTV",)}, "auto"),
    ({"pet": ["GTV_PET"], "ct": ["GTV_CT", "GTV"]}, {"ct": ("GTV_CT", "GTV"), "pet": ("GTV_PET",)}, "auto"),
    ({"pet": ["GTV_PET"], "fallback": "none"}, {"pet": ("GTV_PET",)}, "none"),
])
def test_spec_from_config(value, patterns: dict, fallback: str) -> None:
    spec = RoiSpec.from_config(value)
    assert spec.patterns == patterns and spec.fallback == fallback
    assert RoiSpec.from_config(value, fallback="none").fallback == "none"


@pytest.mark.parametrize("value, fallback, match", [
    (42, None, r"roi: expected None, a list .* found int 42"),
    ({"mr": ["x"]}, None, r"roi: unknown key\(s\) \['mr'\]"),
    ({"pet": [""]}, None, r"roi\.pet: expected a list of ROI name patterns"),
    ({"ct": "GTV", "pet": [3]}, None, r"roi\.pet: expected a list"),
    (["GTV"], "maybe", r"roi\.fallback: expected one of \['auto', 'none'\], found 'maybe'"),
    ({"fallback": "guess"}, None, r"roi\.fallback: .*found 'guess'"),
])
def test_spec_errors_name_the_field(value, fallback, match: str) -> None:
    with pytest.raises(CatalogError, match=match):
        RoiSpec.from_config(value, fallback=fallback)


def test_match_rois_case_insensitive_first_pattern_wins() -> None:
    refs = [RoiRef("a.dcm", "rtstruct", n, i) for i, n in enumerate(["Body", "GTV_2", "gtv_1", "PTV", "GTVnode"])]
    assert [r.name for r in match_rois(refs, ["gtv_*"])] == ["GTV_2", "gtv_1"]
    assert [r.name for r in match_rois(refs, ["gtv_1", "GTV*", "body"])] == ["gtv_1", "GTV_2", "GTVnode", "Body"]
    assert match_rois(refs, ["liver"]) == [] and match_rois(refs, []) == []


def test_named_roi_and_lesions_known_answers(phantom: dict) -> None:
    ct, suv = phantom["ct"], phantom["suv"]
    m = measure_rois(ct, suv, phantom["refs"], RoiSpec.from_config(["gtv_*"]))
    assert (m.roi, m.roi_source, m.fallback_used, m.problems) == ("GTV_primary", "rtstruct", False, [])
    assert np.array_equal(m.ct_mask, _box(ct.shape, PRIMARY_CT))
    assert np.array_equal(m.pet_mask, _box(suv.shape, PRIMARY_PET))
    ph = m.phenotypes
    assert (ph["roi"], ph["roi_source"]) == ("GTV_primary", "rtstruct")
    assert ph["volume_ml"] == pytest.approx(ML) and ph["volume_ml_pet"] == pytest.approx(ML)
    assert ph["ct_mean_hu"] == pytest.approx(40.0) and ph["suv_max"] == pytest.approx(12.0)
    assert ph["suv_mean"] == pytest.approx((7 * 5.0 + 12.0) / 8)
    assert ph["mtv_ml"] == pytest.approx(ML) and ph["tlg"] == pytest.approx(ML * 47.0 / 8)  # all >= 0.4 * 12
    assert [(r["name"], r["source"], r["matched_by"]) for r in m.lesions] == [
        ("GTV_primary", "rtstruct", "ct,pet"), ("gtv_Node", "rtstruct", "ct,pet")]
    node = m.lesions[1]
    assert node["volume_ml"] == pytest.approx(ML / 2) and node["suv_max"] == pytest.approx(3.0)
    assert node["mtv_ml"] == pytest.approx(ML / 2) and node["tlg"] == pytest.approx(ML / 2 * 3.0)
    assert m.totals == pytest.approx({"n_lesions": 2, "total_mtv_ml": 1.5 * ML, "total_tlg": ML * 47 / 8 + ML * 1.5})
    assert np.allclose(roi_centroid_mm(m, ct, suv), ct.world_coords(np.array([5.5, 9.5, 9.5])))


def test_pattern_order_picks_the_patient_roi(phantom: dict) -> None:
    m = measure_rois(phantom["ct"], phantom["suv"], phantom["refs"], RoiSpec.from_config(["*node", "GTV*"]))
    assert m.roi == "gtv_Node" and [r["name"] for r in m.lesions] == ["gtv_Node", "GTV_primary"]
    assert m.phenotypes["suv_max"] == pytest.approx(3.0)


def test_roi_named_for_one_modality_is_carried_to_the_other(phantom: dict) -> None:
    ct, suv = phantom["ct"], phantom["suv"]
    m = measure_rois(ct, suv, phantom["refs"], RoiSpec.from_config({"pet": ["GTV_primary"]}))
    assert m.roi == "GTV_primary" and m.roi_by_modality == {"ct": None, "pet": "GTV_primary"}
    assert np.array_equal(m.ct_mask, _box(ct.shape, PRIMARY_CT))
    assert m.phenotypes["ct_mean_hu"] == pytest.approx(40.0)
    assert [r["matched_by"] for r in m.lesions] == ["pet"]
    split = measure_rois(ct, suv, phantom["refs"], RoiSpec.from_config({"ct": ["GTV_primary"], "pet": ["*node"]}))
    assert split.roi == "GTV_primary + gtv_Node"
    assert split.phenotypes["volume_ml_ct"] == pytest.approx(ML) and split.phenotypes["suv_max"] == pytest.approx(3.0)
    assert split.totals["total_mtv_ml"] == pytest.approx(ML / 2)  # PET totals over the PET-matched ROIs only


def test_no_match_with_fallback_none_measures_nothing(phantom: dict) -> None:
    m = measure_rois(phantom["ct"], phantom["suv"], phantom["refs"], RoiSpec.from_config(["liver"], "none"))
    assert not m.measured and m.phenotypes == {} and m.lesions == [] and not m.fallback_used
    assert m.roi is None and m.roi_source is None and m.ct_mask is None and m.pet_mask is None
    assert m.totals["n_lesions"] == 0 and np.isnan(m.totals["total_mtv_ml"])
    assert roi_centroid_mm(m, phantom["ct"], phantom["suv"]) is None


def test_no_match_falls_back_to_the_automatic_lesion(phantom: dict) -> None:
    ct, suv = phantom["ct"], phantom["suv"]
    m = measure_rois(ct, suv, phantom["refs"], RoiSpec.from_config(None))
    assert (m.roi, m.roi_source, m.fallback_used) == (AUTO_PET_LABEL, "auto", True)
    # The CT lung tumour (the larger box) steers the PET search away from the 30 SUV decoy.
    assert np.array_equal(m.pet_mask, _box(suv.shape, PRIMARY_PET))
    assert np.array_equal(m.ct_mask, _box(ct.shape, PRIMARY_CT))
    assert m.phenotypes["suv_max"] == pytest.approx(12.0) and m.phenotypes["volume_ml"] == pytest.approx(ML)
    assert [r["name"] for r in m.lesions] == [AUTO_PET_LABEL] and m.totals["total_mtv_ml"] == pytest.approx(ML)


def test_auto_lesion_without_ct_or_pet() -> None:
    ct, suv = _ct(), _suv()
    label, ct_mask, pet_mask = auto_lesion(None, suv)  # no CT: the global SUVmax component, the decoy
    assert label == AUTO_PET_LABEL and ct_mask is None and pet_mask.sum() == 1 and pet_mask[DECOY_PET]
    label, ct_mask, pet_mask = auto_lesion(ct, None)
    assert label == AUTO_CT_LABEL and pet_mask is None and np.array_equal(ct_mask, _box(ct.shape, PRIMARY_CT))
    assert np.array_equal(mask_to_grid(_box(suv.shape, NODE_PET), suv, ct), _box(ct.shape, NODE_CT))


def test_roi_on_another_frame_of_reference_is_a_problem_not_a_crash(phantom: dict, tmp_path: Path) -> None:
    other = _write_rtstruct(tmp_path / "other.dcm", {"GTV_other": _box_contours(NODE_CT)}, for_uid="1.2.3.999")
    refs = list_rois(other) + phantom["refs"]
    m = measure_rois(phantom["ct"], phantom["suv"], refs, RoiSpec.from_config(["GTV_other", "GTV_primary"]))
    assert m.roi == "GTV_primary" and [r["name"] for r in m.lesions] == ["GTV_primary"]
    assert {p["path"] for p in m.problems} == {str(other)}
    assert any("1.2.3.999" in p["error"] for p in m.problems)
    assert any("does not intersect the CT or PET grid" in p["error"] for p in m.problems)


@pytest.mark.parametrize("seed", range(12))
def test_compact_mask_to_grid_equals_the_general_resampling(seed: int) -> None:
    """mask_to_grid's axis-aligned path (bounding box, per-axis gathers) gives the voxels of scipy's general
    affine nearest-neighbour resampling, on random grids with permuted / flipped axes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    perm, signs = rng.permutation(3), rng.choice([-1.0, 1.0], 3)
    for b in range(3):
        affine[perm[b], b] = signs[b] * rng.uniform(1.0, 5.0)
    affine[:3, 3] = rng.uniform(-20, 20, 3)
    source = Volume(np.zeros(tuple(rng.integers(4, 14, 3))), affine, "SUVbw")
    target_affine = np.diag([*rng.uniform(0.7, 3.0, 3), 1.0])
    target_affine[:3, 3] = rng.uniform(-25, 5, 3)
    target = Volume(np.zeros(tuple(rng.integers(6, 30, 3))), target_affine, "HU")
    mask = rng.random(source.shape) < 0.1
    m = np.linalg.inv(source.affine) @ target.affine
    general = ndimage.affine_transform(mask.astype(np.float32), m[:3, :3], offset=m[:3, 3], output_shape=target.shape,
                                       order=0, mode="constant", cval=0.0) > 0.5
    assert np.array_equal(mask_to_grid(mask, source, target), general)
