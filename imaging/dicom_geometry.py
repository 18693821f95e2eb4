"""Slice geometry of a series: consistency checks, order along the slice normal, uniform grid and LPS affine.

Real scanners write slightly irregular slice positions (GE whole-body PET: gaps of 3.19, 3.27 and 3.29 mm in
one series) and overlapping bed positions. Those are accepted: the slices are placed on a uniform grid along
the normal (a source slice within `SNAP_FRACTION` of a grid plane is taken as is, other planes are linearly
interpolated from their two neighbours) and the spread is reported. Really broken series are refused: a gap
over `MAX_GAP_RATIO` x the median (a missing slice), two images at one position, mixed orientations, pixel
spacings or matrix sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion.errors import DicomSeriesError
from imaging.dicom_frames import FrameGeometry

ORIENTATION_ATOL = 1e-4
SPACING_RTOL = 1e-4
UNIFORM_RTOL = 0.01  # gaps within 1% of the median: uniform (floating point in IPP strings)
MAX_GAP_RATIO = 1.5  # a larger gap means a slice is missing
DUPLICATE_MM = 1e-3
SNAP_FRACTION = 0.05  # a source slice this close (fraction of the step) to a grid plane is used unchanged


@dataclass
class SlicePlan:
    """How to build the output volume from the source frames: order, interpolation and affine."""

    order: np.ndarray  # source frame indices sorted along the normal
    lower: np.ndarray  # per output slice: position in `order` of the lower neighbour
    weight: np.ndarray  # per output slice: weight of the upper neighbour (0 = copy the lower one)
    affine: np.ndarray
    meta: dict = field(default_factory=dict)


def _check_consistent(frames: list[FrameGeometry], shapes: list[tuple[int, int]]) -> None:
    """Same orientation, pixel spacing and matrix size in every frame (DicomSeriesError naming the odd file)."""
    ref = frames[0]
    orientation = np.stack([fr.orientation for fr in frames])
    spacing = np.stack([fr.pixel_spacing for fr in frames])
    bad_orientation = ~np.all(np.isclose(orientation, ref.orientation, atol=ORIENTATION_ATOL, rtol=0), axis=1)
    bad_spacing = ~np.all(np.isclose(spacing, ref.pixel_spacing, rtol=SPACING_RTOL), axis=1)
    bad_shape = np.array([s != shapes[0] for s in shapes])
    for n in np.flatnonzero(bad_orientation | bad_spacing | bad_shape)[:1]:
        fr, shape = frames[n], shapes[n]
        if bad_orientation[n]:
            raise DicomSeriesError(
                f"{fr.path}: DICOM tag ImageOrientationPatient {list(fr.orientation)} differs from "
                f"{ref.path.name} {list(ref.orientation)} (mixed orientations in one series)")
        if bad_spacing[n]:
            raise DicomSeriesError(
                f"{fr.path}: DICOM tag PixelSpacing {list(fr.pixel_spacing)} differs from {ref.path.name} "
                f"{list(ref.pixel_spacing)} (mixed pixel spacings in one series)")
        raise DicomSeriesError(
            f"{fr.path}: DICOM tags Rows/Columns {shape[0]}x{shape[1]} differ from {ref.path.name} "
            f"{shapes[0][0]}x{shapes[0][1]} (mixed matrix sizes in one series)")
    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    if not (np.isclose(np.linalg.norm(row_cos), 1, atol=1e-3) and np.isclose(np.linalg.norm(col_cos), 1, atol=1e-3)
            and abs(np.dot(row_cos, col_cos)) < 1e-3):
        raise DicomSeriesError(f"{ref.path}: DICOM tag ImageOrientationPatient {list(ref.orientation)} is not two "
                               f"orthonormal direction cosines")


def _label(fr: FrameGeometry) -> str:
    """File name, plus the frame number for multi-frame files."""
    return f"{fr.path.name} frame {fr.frame + 1}" if fr.frame else fr.path.name


def plan_slices(frames: list[FrameGeometry], shapes: list[tuple[int, int]],
                single_slice_mm: float = 1.0) -> SlicePlan:
    """Check the frames form one volume and plan its uniform grid along the normal; DicomSeriesError if broken."""
    _check_consistent(frames, shapes)
    ref = frames[0]
    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.stack([fr.position for fr in frames])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    n = len(frames)
    meta: dict = {"n_source_slices": n}
    if n == 1:
        step = normal * single_slice_mm
        lower, weight = np.zeros(1, dtype=np.int64), np.zeros(1)
        meta.update(slice_spacing_mm=float(single_slice_mm), slice_resampled=False)
    else:
        gaps = np.diff(along)
        dup = np.flatnonzero(gaps < DUPLICATE_MM)
        if dup.size:
            a, b = frames[order[dup[0]]], frames[order[dup[0] + 1]]
            raise DicomSeriesError(
                f"{b.path}: DICOM tag ImagePositionPatient of {_label(b)} duplicates the slice position of "
                f"{_label(a)} ({along[dup[0]]:.3f} mm along the slice normal; two images at one position)")
        median_gap = float(np.median(gaps))
        big = np.flatnonzero(gaps > MAX_GAP_RATIO * median_gap)
        if big.size:
            b = frames[order[big[0] + 1]]
            raise DicomSeriesError(
                f"{b.path}: DICOM tag ImagePositionPatient gives a slice gap of {gaps[big[0]]:.3f} mm before "
                f"{_label(b)}, {gaps[big[0]] / median_gap:.2f}x the median {median_gap:.3f} mm (missing slice?)")
        meta.update(slice_gap_min_mm=float(gaps.min()), slice_gap_median_mm=median_gap,
                    slice_gap_max_mm=float(gaps.max()))
        span = along[-1] - along[0]
        if np.all(np.abs(gaps - median_gap) <= UNIFORM_RTOL * median_gap):
            lower, weight, n_out = np.arange(n), np.zeros(n), n
            meta.update(slice_resampled=False)
        else:
            n_out = int(round(span / median_gap)) + 1
            targets = along[0] + np.arange(n_out) * (span / (n_out - 1))
            lower, weight, snapped = _interpolation(along, targets, span / (n_out - 1))
            meta.update(slice_resampled=True, n_interpolated_slices=int(np.sum(weight > 0)),
                        max_snap_shift_mm=snapped)
        step = (positions[-1] - positions[0]) / (n_out - 1)
        meta.update(slice_spacing_mm=float(np.linalg.norm(step)))
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col_cos * ref.pixel_spacing[0]  # rows advance along the column direction, spacing [0]
    affine[:3, 2] = row_cos * ref.pixel_spacing[1]  # columns advance along the row direction, spacing [1]
    affine[:3, 3] = positions[0]
    return SlicePlan(order=order, lower=np.asarray(lower, dtype=np.int64), weight=np.asarray(weight), affine=affine,
                     meta=meta)


def _interpolation(along: np.ndarray, targets: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Per target plane: lower neighbour, upper weight (0 when a source is within SNAP_FRACTION), max snap shift."""
    n = len(along)
    nearest = np.clip(np.searchsorted(along, targets), 1, n - 1)
    nearest = np.where(np.abs(along[nearest - 1] - targets) <= np.abs(along[nearest] - targets), nearest - 1, nearest)
    shift = np.abs(along[nearest] - targets)
    snap = shift <= SNAP_FRACTION * step
    lower = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, n - 2)
    weight = np.clip((targets - along[lower]) / (along[lower + 1] - along[lower]), 0.0, 1.0)
    lower = np.where(snap, nearest, lower)
    weight = np.where(snap, 0.0, weight)
    return lower, weight, float(shift[snap].max()) if snap.any() else 0.0


def apply_plan(plan: SlicePlan, stored: list[np.ndarray], slopes: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """Rescale the source frames (stored*slope+intercept, float32) and place them on the planned grid."""
    order = plan.order
    n_out = len(plan.lower)
    rows, cols = stored[0].shape
    out = np.empty((n_out, rows, cols), dtype=np.float32)
    for k in range(n_out):
        lo = order[plan.lower[k]]
        np.multiply(stored[lo], np.float32(slopes[lo]), out=out[k], casting="unsafe")
        out[k] += np.float32(intercepts[lo])
        w = plan.weight[k]
        if w > 0:
            hi = order[plan.lower[k] + 1]
            upper = stored[hi].astype(np.float32) * np.float32(slopes[hi]) + np.float32(intercepts[hi])
            out[k] *= np.float32(1.0 - w)
            out[k] += np.float32(w) * upper
    return out
