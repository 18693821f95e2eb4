"""The ROI mask the radiology stage keeps for patient reports (flows.stages.radiology_study.write_roi_npz /
read_roi_npz): exact round trip through the box + bit-packed form, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from flows.stages.radiology_study import read_roi_npz, write_roi_npz
from fusion.errors import SegmentationError


def test_roi_mask_round_trips_through_its_box(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 64, 64), dtype=bool)
    mask[11:17, 20:31, 5:44] = rng.random((6, 11, 39)) > 0.3  # ragged inside its box
    path = write_roi_npz(tmp_path / "P_roi.npz", mask, "GTV-1", "rtstruct")
    back, info = read_roi_npz(path, mask.shape)
    assert np.array_equal(back, mask)
    lo, hi = np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0)
    assert (info["ijk_min"], info["ijk_max"]) == (lo.tolist(), hi.tolist())
    assert (info["label"], info["source"]) == ("GTV-1", "rtstruct")
    assert path.stat().st_size < mask.size / 50  # box + 1 bit per voxel, compressed
    assert [p.name for p in tmp_path.iterdir()] == ["P_roi.npz"]  # written atomically: no temp file left
    assert write_roi_npz(tmp_path / "none.npz", np.zeros((2, 2, 2), bool)) is None
    assert not (tmp_path / "none.npz").exists()


def test_roi_mask_errors_name_the_file(tmp_path):
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:4, 2:4, 2:4] = True
    path = write_roi_npz(tmp_path / "P_roi.npz", mask)
    with pytest.raises(SegmentationError, match=r"P_roi.npz: ROI mask on a \(8, 8, 8\) grid.*\(9, 8, 8\)"):
        read_roi_npz(path, (9, 8, 8))
    path.write_bytes(b"not an npz")
    with pytest.raises(SegmentationError, match="P_roi.npz: unreadable ROI mask"):
        read_roi_npz(path)
