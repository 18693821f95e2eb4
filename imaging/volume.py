"""A 3D image that travels with its affine (voxel index [k, j, i] -> DICOM patient LPS mm) and units."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_SLAB = 32  # slices per compressed chunk: memory beyond the volume stays a few MB plus the compressed bytes


def _fits_int16(array: np.ndarray) -> bool:
    """True when every value is a whole number within int16 (a CT in HU): stored as int16, exactly."""
    for k in range(0, array.shape[0], _SLAB):
        part = array[k:k + _SLAB]
        if not np.array_equal(part.astype(np.int16).astype(part.dtype), part):  # catches NaN, fractions, range
            return False
    return True


def _blosc_chunks(array: np.ndarray, dtype: np.dtype) -> Iterator[bytes]:
    """`array` as `dtype`, slab by slab, Blosc-compressed (LZ4 level 5, byte shuffle) on one thread."""
    from numcodecs import Blosc, blosc

    codec = Blosc("lz4", 5, Blosc.SHUFFLE)
    previous = blosc.set_nthreads(1)  # the caller's threads are the parallelism; Blosc's own would oversubscribe
    try:
        for k in range(0, array.shape[0], _SLAB):
            yield codec.encode(np.ascontiguousarray(array[k:k + _SLAB], dtype=dtype))
    finally:
        blosc.set_nthreads(previous)


def _blosc_decode(data: Any, n_chunks: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `_blosc_chunks`: the npz members ``array_blosc_{i}`` into one array."""
    from numcodecs import Blosc

    out = np.empty(shape, dtype=np.dtype(dtype))
    codec = Blosc()
    for i in range(n_chunks):
        part = np.frombuffer(codec.decode(data[f"array_blosc_{i:05d}"]), dtype=out.dtype)
        out[i * _SLAB:(i + 1) * _SLAB] = part.reshape((-1, *shape[1:]))
    return out


def _write_npz(fh: Any, entries: dict[str, np.ndarray], chunks: Iterator[bytes]) -> None:
    """An uncompressed .npz of `entries` plus one uint8 member ``array_blosc_{i}`` per compressed chunk, each
    written as soon as it is made (memory: one chunk), and ``array_chunks``: how many."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        def member(name: str, value: np.ndarray) -> None:
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asarray(value), allow_pickle=False)

        for name, value in entries.items():
            member(name, value)
        count = 0
        for count, chunk in enumerate(chunks, start=1):
            member(f"array_blosc_{count - 1:05d}", np.frombuffer(chunk, dtype=np.uint8))
        member("array_chunks", np.array(count, dtype=np.int64))


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

    def with_array(self, array: np.ndarray, units: str | None = None, **meta: Any) -> Volume:
        """New volume on the same grid with another array (and optionally units / extra meta)."""
        return Volume(array, self.affine.copy(), units or self.units, {**self.meta, **meta})

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write array, affine, units and meta (JSON) to an .npz (temp file then rename).

        The array is stored Blosc-compressed (LZ4, byte shuffle; one thread) in 32-slice chunks, each written
        as made (memory beyond the volume: one chunk): a 512x512x300 CT takes about a second where numpy's
        deflate took half a minute, for a file of similar size. An array of whole numbers within int16 (a CT
        in HU) is stored as int16, losslessly. `load_npz` reads both this and the older deflated layout (an
        ``array`` entry).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        dtype = np.dtype(np.int16) if _fits_int16(self.array) else self.array.dtype
        chunks = _blosc_chunks(self.array, dtype)
        entries = {"array_dtype": np.array(dtype.str), "array_shape": np.asarray(self.array.shape, dtype=np.int64),
                   "affine": self.affine, "units": np.array(self.units),
                   "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                _write_npz(fh, entries, chunks)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> Volume:
        """Read a volume written by `save_npz` (either layout)."""
        with np.load(Path(path), allow_pickle=False) as data:
            missing = {"affine", "units", "meta"} - set(data.files)
            blosc = {"array_chunks", "array_dtype", "array_shape"}
            if missing or not ({"array"} <= set(data.files) or blosc <= set(data.files)):
                raise ValueError(f"{path}: not a Volume npz, missing entries "
                                 f"{sorted(missing | ({'array'} - set(data.files)))}")
            if "array" in data.files:
                array = data["array"]
            else:
                array = _blosc_decode(data, int(data["array_chunks"]), str(data["array_dtype"]),
                                      tuple(int(n) for n in data["array_shape"]))
            return cls(array=array, affine=data["affine"], units=str(data["units"]),
                       meta=json.loads(str(data["meta"])))


# --- Axis-aligned grids: separable resampling (per-axis gathers in float32) -------------------------------------


@dataclass(frozen=True)
class AxisMap:
    """Reference voxel index -> moving voxel index when both grids are axis-aligned to each other.

    Along reference axis b the moving index is ``scale[b] * index + offset[b]`` on moving axis ``axes[b]``
    (a permutation: the grids may order or flip their axes differently).
    """

    axes: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    def coords(self, b: int, index: np.ndarray) -> np.ndarray:
        """Fractional moving indices (float64, as scipy computes them) of reference indices along axis b."""
        return self.scale[b] * np.asarray(index, dtype=np.float64) + self.offset[b]


def axis_map(moving: Volume, reference: Volume, tol_vox: float = 1e-6) -> AxisMap | None:
    """The AxisMap from `reference`'s grid to `moving`'s, or None when the grids are rotated against each other
    (an off-axis term would move a sample by more than `tol_vox` voxels anywhere on the reference grid)."""
    m = np.linalg.inv(moving.affine) @ reference.affine
    axes = tuple(int(a) for a in np.argmax(np.abs(m[:3, :3]), axis=0))
    if sorted(axes) != [0, 1, 2]:
        return None
    extent = np.maximum(np.asarray(reference.shape, dtype=np.float64) - 1.0, 1.0)
    off = np.abs(m[:3, :3]).copy()
    off[list(axes), [0, 1, 2]] = 0.0
    if float((off * extent[None, :]).sum(axis=1).max()) > tol_vox:
        return None
    scale = tuple(float(m[axes[b], b]) for b in range(3))
    offset = tuple(float(m[axes[b], 3]) for b in range(3))
    return AxisMap(axes, scale, offset)  # type: ignore[arg-type]


def check_frame_of_reference(moving: Volume, reference: Volume) -> None:
    """DicomSeriesError when both volumes name a FrameOfReferenceUID and they differ: their affines then map to
    different patient spaces and no resampling between them means anything."""
    from fusion.errors import DicomSeriesError

    mov_for, ref_for = moving.meta.get("frame_of_reference_uid"), reference.meta.get("frame_of_reference_uid")
    if mov_for and ref_for and mov_for != ref_for:
        raise DicomSeriesError(
            f"series {moving.meta.get('series_uid')}: FrameOfReferenceUID {mov_for} differs from reference "
            f"series {reference.meta.get('series_uid')} ({ref_for}); the affines do not share a patient space")


def _linear_axis(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation along one axis of length n at coordinates x: (lo, hi, weight of hi as float32, valid).

    Like scipy.ndimage's mode='constant': a coordinate outside [0, n - 1] is invalid (filled), with no blending."""
    valid = (x >= 0.0) & (x <= n - 1)
    xc = np.clip(x, 0.0, n - 1)
    lo = np.floor(xc).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (xc - lo).astype(np.float32), valid


def _nearest_axis(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest index (half up, as scipy's order 0) along one axis of length n, and where x lies on the axis."""
    valid = (x >= 0.0) & (x <= n - 1)
    return np.clip(np.floor(x + 0.5), 0, n - 1).astype(np.intp), valid


def _box_ranges(shape: tuple[int, ...], box: tuple[slice, ...] | None) -> list[np.ndarray]:
    """Reference indices along each axis covered by `box` (slices with steps of 1; default: the whole grid)."""
    box = box or (slice(None),) * 3
    return [np.arange(*s.indices(n)) for s, n in zip(box, shape)]


def resample_nearest(array: np.ndarray, amap: AxisMap, shape: tuple[int, int, int], fill: Any = 0,
                     box: tuple[slice, ...] | None = None, origin: tuple[int, int, int] = (0, 0, 0),
                     moving_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Nearest-neighbour copy of `array` (moving grid, any dtype, e.g. a bool mask) onto the reference grid of
    `shape` (only the reference `box` when given), equal to scipy's order-0 affine_transform (constant mode).

    `array` may be a crop of the moving grid (`moving_shape`) starting at moving voxel `origin` (a compact
    mask): samples landing off the crop get `fill` too."""
    moving_shape = tuple(moving_shape or array.shape)
    idx, ok = [], []
    for b, r in enumerate(_box_ranges(shape, box)):
        a = amap.axes[b]
        i, v = _nearest_axis(amap.coords(b, r), moving_shape[a])
        i = i - origin[a]
        v &= (i >= 0) & (i < array.shape[a])
        idx.append(np.clip(i, 0, array.shape[a] - 1))
        ok.append(v)
    out = np.transpose(array, amap.axes)[np.ix_(*idx)]
    if not all(v.all() for v in ok):
        out[~(ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :])] = fill
    return out


@dataclass(frozen=True)
class CompactMask:
    """A boolean mask kept as its bounding-box crop (`array`) and the crop's first voxel (`offset`) on a grid
    of `shape`: a tumour's mask on a 512x512x300 CT is kilobytes instead of a 78 MB (or 300 MB float) grid."""

    array: np.ndarray
    offset: tuple[int, int, int]
    shape: tuple[int, int, int]

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> CompactMask | None:
        """The crop of a full-grid mask to its bounding box (None when the mask is empty)."""
        box = bounding_box(mask)
        if box is None:
            return None
        return cls(np.asarray(mask[box], dtype=bool), tuple(s.start for s in box), tuple(mask.shape))  # type: ignore

    @property
    def box(self) -> tuple[slice, slice, slice]:
        """The crop's slices on the full grid."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.array.shape))  # type: ignore[return-value]

    def to_full(self) -> np.ndarray:
        """The mask on the full grid."""
        full = np.zeros(self.shape, dtype=bool)
        full[self.box] = self.array
        return full


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every True voxel of a 3D mask, widened by `pad` voxels (clipped to
    the grid); None when the mask is empty. Reductions per axis: no index array of the voxels."""
    mask = np.asarray(mask)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def resample_linear(array: np.ndarray, amap: AxisMap, shape: tuple[int, int, int], fill: float = 0.0,
                    box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Trilinear resampling of `array` onto the reference grid of `shape` (or its `box`), separably in float32:
    each moving plane needed is interpolated in-plane once (two gathers), then the output planes are blended
    from their two neighbouring planes. Equals scipy's order-1 affine_transform (constant mode) within float32
    rounding; memory beyond the output is a few planes."""
    moved = np.transpose(np.asarray(array, dtype=np.float32), amap.axes)
    ranges = _box_ranges(shape, box)
    (lo0, hi0, w0, ok0), (lo1, hi1, w1, ok1), (lo2, hi2, w2, ok2) = (
        _linear_axis(amap.coords(b, r), moved.shape[b]) for b, r in enumerate(ranges))
    out = np.full(tuple(len(r) for r in ranges), np.float32(fill), dtype=np.float32)
    w1c, w2r = w1[:, None], w2[None, :]
    planes: dict[int, np.ndarray] = {}

    def plane(s: int) -> np.ndarray:
        if s not in planes:
            rows = moved[s][lo1] * (1.0 - w1c) + moved[s][hi1] * w1c  # [n1, m2]
            planes[s] = rows[:, lo2] * (1.0 - w2r) + rows[:, hi2] * w2r  # [n1, n2]
        return planes[s]

    for k in np.flatnonzero(ok0):
        lo, hi = int(lo0[k]), int(hi0[k])
        for stale in [s for s in planes if s not in (lo, hi)]:
            del planes[stale]
        out[k] = plane(lo) if w0[k] == 0.0 else plane(lo) * (1.0 - w0[k]) + plane(hi) * w0[k]
    out[:, ~ok1, :] = fill
    out[:, :, ~ok2] = fill
    return out


def crop_patch(
    volume: Volume, centre_mm: np.ndarray | tuple[float, float, float], size_vox: int = 32,
    spacing_mm: float = 2.0, fill: float | None = None,
) -> np.ndarray:
    """Isotropic patch [size, size, size] (axes along world z, y, x) of `spacing_mm` mm voxels centred on an LPS point.

    Sampled through the affine with trilinear interpolation; outside the volume `fill`
    (default: the volume minimum, i.e. air for CT, zero uptake for PET).
    """
    centre = np.asarray(centre_mm, dtype=np.float64)
    if centre.shape != (3,) or not np.all(np.isfinite(centre)):
        raise ValueError(f"centre_mm must be 3 finite LPS coordinates, got {centre_mm!r}")
    offsets = (np.arange(size_vox, dtype=np.float64) - (size_vox - 1) / 2.0) * spacing_mm
    dz, dy, dx = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    points = centre + np.stack([dx, dy, dz], axis=-1)
    index = volume.voxel_coords(points)  # [D, H, W, 3] in (k, j, i)
    cval = float(volume.array.min()) if fill is None else float(fill)
    from scipy import ndimage

    patch = ndimage.map_coordinates(volume.array, np.moveaxis(index, -1, 0), order=1, mode="constant", cval=cval)
    return patch.astype(np.float32)
