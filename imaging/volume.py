"""A 3D image that travels with its affine (voxel index [k, j, i] -> DICOM patient LPS mm) and units."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Volume:
    """Scalar volume: `array` [slice k, row j, col i] (float32), `affine` 4x4 mapping [k, j, i, 1] to LPS mm.

    `units` names the physical quantity of the voxel values ("HU", "BQML", "SUVbw");
    `meta` holds JSON-serialisable identifiers (patient_id, series_uid, modality,
    frame_of_reference_uid, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    units: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D [k, j, i], got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {self.affine.shape}")
        if not np.allclose(self.affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"Volume.affine last row must be [0, 0, 0, 1], got {self.affine[3]}")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise ValueError("Volume.affine is singular (zero spacing or collinear axes)")
        if not isinstance(self.units, str) or not self.units:
            raise ValueError(f"Volume.units must be a non-empty string, got {self.units!r}")
        self.meta = dict(self.meta)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (k, j, i) in voxels."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel step along the array axes (k, j, i) in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in ml (cm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def world_coords(self, indices: np.ndarray) -> np.ndarray:
        """Map voxel indices [..., 3] in array order (k, j, i) to LPS patient coordinates (x, y, z) in mm."""
        idx = np.asarray(indices, dtype=np.float64)
        if idx.shape[-1] != 3:
            raise ValueError(f"indices must have last dimension 3 (k, j, i), got shape {idx.shape}")
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def voxel_coords(self, points_mm: np.ndarray) -> np.ndarray:
        """Map LPS points [..., 3] (x, y, z) in mm to fractional voxel indices (k, j, i)."""
        pts = np.asarray(points_mm, dtype=np.float64)
        if pts.shape[-1] != 3:
            raise ValueError(f"points_mm must have last dimension 3 (x, y, z), got shape {pts.shape}")
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array: np.ndarray, units: str | None = None, **meta: Any) -> "Volume":
        """New volume on the same grid with another array (and optionally units / extra meta)."""
        return Volume(array, self.affine.copy(), units or self.units, {**self.meta, **meta})

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write array, affine, units and meta (JSON) to a compressed .npz (temp file then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(
                    fh,
                    array=self.array,
                    affine=self.affine,
                    units=np.array(self.units),
                    meta=np.array(json.dumps(self.meta, sort_keys=True)),
                )
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "Volume":
        """Read a volume written by `save_npz`."""
        with np.load(Path(path), allow_pickle=False) as data:
            missing = {"array", "affine", "units", "meta"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a Volume npz, missing entries {sorted(missing)}")
            return cls(
                array=data["array"],
                affine=data["affine"],
                units=str(data["units"]),
                meta=json.loads(str(data["meta"])),
            )
