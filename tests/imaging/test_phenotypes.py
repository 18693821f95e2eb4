"""Tumour phenotypes: CT sphere volume, SUVmax/mean/peak, MTV and TLG against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from flows.synthetic.dicom_writer import (
    ct_geometry,
    lung_tumour_centre_mm,
    write_ct_series,
    write_pet_series,
)
from fusion.errors import DicomSeriesError
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.phenotypes import (
    pet_tumour_mask,
    segment_lung_tumour,
    suv_peak,
    tumour_centroid_mm,
    tumour_phenotypes,
)
from imaging.resample import resample_to_reference
from imaging.volume import Volume

PID = "TCGA-FX-0004"
RADIUS_MM = 14.0
TUMOUR_SUV = 8.0


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, Volume, dict]:
    root = tmp_path_factory.mktemp("pheno")
    centre = lung_tumour_centre_mm(np.random.default_rng(8), ct_geometry(), RADIUS_MM)
    truth = write_ct_series(root / "ct", patient_id=PID, tumour_centre_mm=centre, tumour_radius_mm=RADIUS_MM, seed=8)
    write_pet_series(root / "pet", patient_id=PID, tumour_centre_mm=centre, tumour_radius_mm=RADIUS_MM,
                     tumour_suv=TUMOUR_SUV, weight_kg=65.0, dose_bq=350e6, injection_to_scan_s=3600.0, seed=9)
    ct = read_ct(root / "ct")
    return ct, resample_to_reference(read_pet_suv(root / "pet"), ct), truth


def _iso_volume(array: np.ndarray, spacing_mm: float, units: str) -> Volume:
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])[[2, 1, 0, 3]]
    return Volume(array, affine, units)


def test_ct_tumour_volume_matches_sphere(patient: tuple[Volume, Volume, dict]) -> None:
    ct, _, truth = patient
    sphere_ml = 4.0 / 3.0 * np.pi * RADIUS_MM**3 / 1000.0  # 11.49 ml
    assert truth["tumour_volume_ml"] == pytest.approx(sphere_ml)
    mask = segment_lung_tumour(ct)
    assert mask.sum() * ct.voxel_volume_ml == pytest.approx(sphere_ml, rel=0.10)
    assert np.linalg.norm(tumour_centroid_mm(mask, ct) - truth["tumour_centre_mm"]) < 1.5
    ph = tumour_phenotypes(ct, None)
    assert ph["ct_tumour_volume_ml"] == pytest.approx(sphere_ml, rel=0.10)
    assert ph["ct_tumour_diameter_mm"] == pytest.approx(2 * RADIUS_MM, rel=0.04)
    assert ph["ct_tumour_mean_hu"] == pytest.approx(truth["tumour_hu"], abs=3.0)
    for key in ("suv_max", "suv_mean", "suv_peak", "mtv_ml", "tlg"):
        assert np.isnan(ph[key])


def test_pleural_blob_and_mediastinum_not_taken_as_tumour(patient: tuple[Volume, Volume, dict]) -> None:
    ct, _, truth = patient
    hu = ct.array.copy()
    # A bigger soft-tissue mass growing from the chest wall into the other lung (pleural, not a nodule).
    centre = np.array(truth["tumour_centre_mm"])
    other_lung = np.array([c for c in truth["geometry"]["lung_centres_mm"] if np.sign(c[0]) != np.sign(centre[0])][0])
    wall_x = other_lung[0] + np.sign(other_lung[0]) * truth["geometry"]["lung_semi_axes_mm"][0]
    idx = np.argwhere(np.ones(hu.shape, dtype=bool))
    xyz = ct.world_coords(idx)
    blob = np.linalg.norm(xyz - [wall_x, other_lung[1], other_lung[2]], axis=1) <= 20.0
    flat = hu.reshape(-1)
    flat[blob & (flat < -300)] = 40.0
    mask = segment_lung_tumour(ct.with_array(hu))
    assert np.linalg.norm(tumour_centroid_mm(mask, ct) - centre) < 1.5


def test_pet_phenotypes_on_patient(patient: tuple[Volume, Volume, dict]) -> None:
    ct, suv_on_ct, _ = patient
    ph = tumour_phenotypes(ct, suv_on_ct)
    assert ph["suv_max"] == pytest.approx(TUMOUR_SUV, rel=1e-2)
    assert ph["suv_peak"] == pytest.approx(TUMOUR_SUV, rel=2e-2)  # a 1 ml sphere fits inside the 14 mm tumour
    assert TUMOUR_SUV * 0.4 < ph["suv_mean"] <= ph["suv_max"]
    assert ph["tlg"] == pytest.approx(ph["mtv_ml"] * ph["suv_mean"])
    # The 40% threshold sits at 3.2 SUV: PET partial volume (4 mm grid) keeps MTV near the sphere volume.
    assert ph["mtv_ml"] == pytest.approx(ph["ct_tumour_volume_ml"], rel=0.25)


def test_pet_hand_computed_sphere() -> None:
    # 1 mm isotropic grid, SUV 6 sphere of radius 8 mm on SUV 1 background; a 0.4 * 6 = 2.4 threshold keeps the sphere.
    n, r = 40, 8.0
    g = np.arange(n) - 20.0
    d = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    sphere = d <= r
    suv = _iso_volume(np.where(sphere, 6.0, 1.0), 1.0, "SUVbw")
    mask = pet_tumour_mask(suv)
    assert np.array_equal(mask, sphere)
    n_vox = int(sphere.sum())
    assert n_vox * 1e-3 == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=0.02)  # 2.14 ml
    # Background hot spot elsewhere (SUV 9) wins without a search mask, loses with one.
    hot = suv.array.copy()
    hot[2:5, 2:5, 2:5] = 9.0
    hot_vol = suv.with_array(hot)
    assert pet_tumour_mask(hot_vol)[3, 3, 3] and not pet_tumour_mask(hot_vol)[20, 20, 20]
    assert np.array_equal(pet_tumour_mask(hot_vol, search_mask=d <= r + 3), sphere)
    # suv_peak: 1 ml sphere (radius 6.2 mm) fits in the radius-8 sphere -> exactly 6.
    assert suv_peak(suv, sphere) == pytest.approx(6.0)

    # Whole pipeline on a lung-like CT with the same sphere: MTV = n_vox ml/1000, TLG = MTV * 6.
    hu = np.full((n, n, n), -850.0)
    hu[:, :2, :] = hu[:, -2:, :] = hu[:, :, :2] = hu[:, :, -2:] = 40.0  # chest wall around every slice
    hu[sphere] = 30.0
    ct = _iso_volume(hu, 1.0, "HU")
    ph = tumour_phenotypes(ct, suv)
    assert ph["ct_tumour_volume_ml"] == pytest.approx(n_vox / 1000.0)
    assert ph["ct_tumour_mean_hu"] == pytest.approx(30.0)
    assert ph["suv_max"] == pytest.approx(6.0) and ph["suv_mean"] == pytest.approx(6.0)
    assert ph["mtv_ml"] == pytest.approx(n_vox / 1000.0)
    assert ph["tlg"] == pytest.approx(6.0 * n_vox / 1000.0)
    # A hotter spot far from the CT tumour (heart, bladder) is ignored.
    assert tumour_phenotypes(ct, hot_vol)["suv_max"] == pytest.approx(6.0)


def test_two_level_tumour_suv_mean() -> None:
    # Core SUV 10 (radius 4) inside a rim of SUV 5 (radius 8): at 40% (4.0) both are in, at 60% (6.0) only the core.
    g = np.arange(32) - 16.0
    d = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    values = np.where(d <= 4, 10.0, np.where(d <= 8, 5.0, 0.5))
    suv = _iso_volume(values, 2.0, "SUVbw")
    core, whole = d <= 4, d <= 8
    m40, m60 = pet_tumour_mask(suv, 0.4), pet_tumour_mask(suv, 0.6)
    assert np.array_equal(m40, whole) and np.array_equal(m60, core)
    expected_mean = (10.0 * core.sum() + 5.0 * (whole.sum() - core.sum())) / whole.sum()
    assert values[m40].mean() == pytest.approx(expected_mean)


def test_pet_must_be_on_ct_grid(patient: tuple[Volume, Volume, dict]) -> None:
    ct, suv_on_ct, _ = patient
    shifted = suv_on_ct.with_array(suv_on_ct.array)
    shifted.affine[0, 3] += 2.0
    with pytest.raises(DicomSeriesError, match="resample_to_reference"):
        tumour_phenotypes(ct, shifted)


def test_empty_ct_gives_no_tumour() -> None:
    ct = _iso_volume(np.full((10, 10, 10), -850.0), 1.0, "HU")
    assert not segment_lung_tumour(ct).any()
    ph = tumour_phenotypes(ct, None)
    assert ph["ct_tumour_volume_ml"] == 0.0 and np.isnan(ph["ct_tumour_mean_hu"])
    assert np.all(np.isnan(tumour_centroid_mm(np.zeros((10, 10, 10), dtype=bool), ct)))


def _whole_grid_lung_tumour(ct: Volume) -> np.ndarray:
    """The segmentation as first written: every step on the whole grid, the wall by a 6-connected dilation."""
    from scipy import ndimage

    from imaging.ct import lung_field

    six = ndimage.generate_binary_structure(3, 1)
    field = lung_field(ct.array)
    soft = ct.array > -300.0
    candidates = soft & field
    labels, n = ndimage.label(candidates, structure=six)
    touching = np.unique(labels[ndimage.binary_dilation(soft & ~field, structure=six) & candidates])
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[touching] = 0
    return labels == int(np.argmax(sizes)) if n and sizes.max() >= 5 else np.zeros(ct.shape, bool)


def test_boxed_segmentation_equals_the_whole_grid_one(patient: tuple[Volume, Volume, dict]) -> None:
    """On the body's box, with the wall found by shifted comparisons: the same voxels, also with a nodule
    touching the chest wall (left out) and soft tissue at the grid's edge."""
    ct = patient[0]
    reference = _whole_grid_lung_tumour(ct)
    assert reference.sum() > 100 and np.array_equal(segment_lung_tumour(ct), reference)
    hu = ct.array.copy()
    body = hu > -500
    k, j, i = (int(np.median(a)) for a in np.nonzero(body))
    hu[:, 0, :] = 40.0  # a table-like slab along the grid's edge widens the body's box to the edge
    hu[k - 1:k + 2, j - 2:j + 2, i - 2:i + 2] = 30.0  # a small blob in the middle of the chest
    edited = ct.with_array(hu)
    assert np.array_equal(segment_lung_tumour(edited), _whole_grid_lung_tumour(edited))


def test_per_slice_hole_filling_equals_scipy_fill_holes() -> None:
    """imaging.ct's per-slice hole filling (under the lung field) fills what ndimage.binary_fill_holes with
    in-plane connectivity fills, on random masks of several slabs (holes open at an edge stay open)."""
    from scipy import ndimage

    from imaging.ct import _fill_holes_per_slice

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    rng = np.random.default_rng(2)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < 0.55
        assert np.array_equal(_fill_holes_per_slice(mask), ndimage.binary_fill_holes(mask, structure=structure))
    ring = np.zeros((1, 5, 5), dtype=bool)
    ring[0, 1:4, 1:4], ring[0, 2, 2] = True, False
    assert _fill_holes_per_slice(ring)[0, 2, 2]
