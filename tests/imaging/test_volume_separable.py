"""Axis-aligned resampling (imaging.volume): the separable float32 resampler against scipy's general affine
resampling on random axis-aligned grids (axes permuted and flipped, boxes), compact masks, npz storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from imaging.volume import (
    CompactMask,
    Volume,
    axis_map,
    bounding_box,
    resample_linear,
    resample_nearest,
)


def _random_pair(rng: np.random.Generator) -> tuple[Volume, Volume]:
    """A moving grid with permuted, flipped, anisotropic axes and a reference grid overlapping it in part."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    perm, signs = rng.permutation(3), rng.choice([-1.0, 1.0], 3)
    for b in range(3):
        affine[perm[b], b] = signs[b] * rng.uniform(0.5, 4.0)
    affine[:3, 3] = rng.uniform(-10, 10, 3)
    moving = Volume(rng.normal(size=tuple(rng.integers(2, 12, 3))), affine, "SUVbw")
    ref_affine = np.diag([*rng.uniform(0.3, 3.0, 3), 1.0])
    ref_affine[:3, 3] = rng.uniform(-15, 15, 3)
    return moving, Volume(np.zeros(tuple(rng.integers(2, 20, 3))), ref_affine, "HU")


def _scipy(moving: Volume, reference: Volume, order: int, fill: float) -> np.ndarray:
    m = np.linalg.inv(moving.affine) @ reference.affine
    return ndimage.affine_transform(moving.array, m[:3, :3], offset=m[:3, 3], output_shape=reference.shape,
                                    order=order, mode="constant", cval=fill)


@pytest.mark.parametrize("seed", range(40))
def test_separable_linear_and_nearest_equal_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    moving, reference = _random_pair(rng)
    amap = axis_map(moving, reference)
    assert amap is not None
    linear = resample_linear(moving.array, amap, reference.shape, fill=-7.0)
    assert linear.dtype == np.float32
    np.testing.assert_allclose(linear, _scipy(moving, reference, 1, -7.0), atol=2e-6, rtol=0)
    np.testing.assert_array_equal(resample_nearest(moving.array, amap, reference.shape, -7.0),
                                  _scipy(moving, reference, 0, -7.0))
    box = tuple(slice(int(rng.integers(0, n)), None) for n in reference.shape)
    np.testing.assert_allclose(resample_linear(moving.array, amap, reference.shape, -7.0, box),
                               _scipy(moving, reference, 1, -7.0)[box], atol=2e-6, rtol=0)


def test_linear_is_exact_on_a_linear_field_inside_and_fills_outside() -> None:
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in (5, 6, 7)), indexing="ij")
    moving = Volume(2.0 * k - j + 0.5 * i, np.diag([4.0, 2.0, 2.0, 1.0]), "SUVbw")
    reference = Volume(np.zeros((9, 11, 13)), np.diag([2.0, 1.0, 1.0, 1.0]), "HU")  # twice as fine, same origin
    out = resample_linear(moving.array, axis_map(moving, reference), reference.shape, fill=-1.0)
    kk, jj, ii = np.meshgrid(*(np.arange(n) / 2.0 for n in (9, 11, 13)), indexing="ij")
    np.testing.assert_allclose(out, 2.0 * kk - jj + 0.5 * ii, atol=1e-5)
    far = np.diag([2.0, 1.0, 1.0, 1.0])
    far[:3, 3] = [0.0, 0.0, 20.0]  # beyond the moving grid's 16 mm along its k axis
    shifted = Volume(np.zeros((3, 3, 3)), far, "HU")
    assert np.all(resample_linear(moving.array, axis_map(moving, shifted), shifted.shape, fill=-1.0) == -1.0)


def test_rotated_grids_have_no_axis_map() -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert axis_map(Volume(np.zeros((3, 3, 3)), rotated, "HU"), Volume(np.zeros((3, 3, 3)), np.eye(4), "HU")) is None


def test_compact_mask_and_bounding_box() -> None:
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2:5, 3, 7:11] = True
    compact = CompactMask.from_mask(mask)
    assert compact.offset == (2, 3, 7) and compact.array.shape == (3, 1, 4)
    assert np.array_equal(compact.to_full(), mask)
    assert bounding_box(mask, pad=2) == (slice(0, 7), slice(1, 6), slice(5, 13))
    assert CompactMask.from_mask(np.zeros((2, 2, 2), bool)) is None and bounding_box(np.zeros((2, 2, 2))) is None


def test_nearest_from_a_compact_crop_equals_the_full_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    moving, reference = _random_pair(rng)
    mask = np.zeros(moving.shape, dtype=bool)
    mask[tuple(slice(n // 3, n // 3 + 2) for n in moving.shape)] = True
    amap = axis_map(moving, reference)
    compact = CompactMask.from_mask(mask)
    full = resample_nearest(mask, amap, reference.shape, False)
    crop = resample_nearest(compact.array, amap, reference.shape, False, None, compact.offset, moving.shape)
    assert np.array_equal(full, crop)


def test_npz_stores_whole_numbers_as_int16_exactly(tmp_path: Path) -> None:
    hu = np.random.default_rng(0).integers(-1024, 3000, size=(40, 9, 7)).astype(np.float32)
    vol = Volume(hu, np.diag([2.5, 0.8, 0.8, 1.0]), "HU", {"series_uid": "1.2"})
    path = vol.save_npz(tmp_path / "ct.npz")
    with np.load(path) as data:
        assert str(data["array_dtype"]) == "<i2" and int(data["array_chunks"]) == 2  # 40 slices, 32 per chunk
    back = Volume.load_npz(path)
    assert back.array.dtype == np.float32 and np.array_equal(back.array, hu) and back.meta == vol.meta
    frac = vol.with_array(hu + 0.25)
    assert np.array_equal(Volume.load_npz(frac.save_npz(tmp_path / "f.npz")).array, hu + 0.25)
    np.savez_compressed(tmp_path / "old.npz", array=hu, affine=vol.affine, units=np.array("HU"),
                        meta=np.array("{}"))  # the earlier deflated layout still loads
    assert np.array_equal(Volume.load_npz(tmp_path / "old.npz").array, hu)
