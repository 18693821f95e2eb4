"""Volume: affine-based coordinates, spacing and an exact npz round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imaging.volume import Volume


def _volume() -> Volume:
    affine = np.array([[0.0, 0.0, 0.8, -100.0], [0.0, 0.8, 0.0, -120.0], [2.5, 0.0, 0.0, 30.0], [0, 0, 0, 1]])
    array = np.random.default_rng(0).normal(size=(4, 5, 6))
    return Volume(array, affine, "HU", {"patient_id": "TCGA-FX-0001", "series_uid": "1.2.3", "n_slices": 4})


def test_coordinates_and_spacing() -> None:
    vol = _volume()
    assert vol.array.dtype == np.float32 and vol.shape == (4, 5, 6)
    assert vol.spacing_mm == pytest.approx((2.5, 0.8, 0.8))
    assert vol.voxel_volume_ml == pytest.approx(2.5 * 0.8 * 0.8 / 1000)
    # k = 2, j = 1, i = 3 -> x = -100 + 3 * 0.8, y = -120 + 0.8, z = 30 + 2 * 2.5
    assert np.allclose(vol.world_coords(np.array([2, 1, 3])), [-97.6, -119.2, 35.0])
    pts = np.array([[[-97.6, -119.2, 35.0], [-100.0, -120.0, 30.0]]])
    assert np.allclose(vol.voxel_coords(pts), [[[2, 1, 3], [0, 0, 0]]])


def test_npz_round_trip(tmp_path: Path) -> None:
    vol = _volume()
    path = vol.save_npz(tmp_path / "sub" / "ct.npz")
    assert path.exists() and not list(path.parent.glob(".*tmp"))
    back = Volume.load_npz(path)
    assert np.array_equal(back.array, vol.array) and np.array_equal(back.affine, vol.affine)
    assert back.units == "HU" and back.meta == vol.meta


def test_invalid_volumes_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((3, 3)), np.eye(4), "HU")
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((3, 3, 3)), np.diag([1.0, 0.0, 1.0, 1.0]), "HU")
    np.savez(tmp_path / "x.npz", array=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="missing entries"):
        Volume.load_npz(tmp_path / "x.npz")
