"""DICOM SEG (multi-frame, one segment per frame) -> boolean mask per segment on a Volume's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import SegmentationError
from imaging.resample import resample_to_reference
from imaging.volume import Volume

_ORIENTATION_ATOL = 1e-4
_IN_PLANE_ATOL_MM = 0.01


def seg_segments(ds: Dataset, path: Path) -> dict[int, str]:
    """Segment number -> label (SegmentSequence; SegmentLabel, else SegmentDescription, else 'segment_N').

    A LABELMAP's segment 0 (background) is left out.
    """
    if "SegmentSequence" not in ds:
        raise SegmentationError(f"{path}: missing DICOM tag SegmentSequence (not a DICOM SEG?)")
    out = {}
    labelmap = str(ds.get("SegmentationType", "")).upper() == "LABELMAP"
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        if labelmap and number == 0:
            continue  # pixel value 0 of a LABELMAP is the background, not a ROI
        label = str(item.get("SegmentLabel", "") or item.get("SegmentDescription", "") or f"segment_{number}")
        out[number] = label.strip()
    return out


def _group_item(ds: Dataset, frame: int, group: str, keyword: str, path: Path):
    """`keyword` from the per-frame functional group `group` of `frame`, else the shared one."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq and len(seq) > index and group in seq[index]:
            item = seq[index][group][0]
            if keyword in item:
                return item[keyword].value
    raise SegmentationError(f"{path}: frame {frame + 1} lacks DICOM tag {keyword} (in {group}, per-frame or shared)")


def _frames(ds: Dataset, path: Path, segment: int) -> np.ndarray:
    """Frames as [frame, row, col] booleans: BINARY 1 bit, FRACTIONAL above half the maximum, LABELMAP == segment."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise SegmentationError(f"{path}: DICOM tag PixelData cannot be decoded ({type(exc).__name__}: {exc})") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    if kind == "FRACTIONAL":
        return pixels > float(ds.get("MaximumFractionalValue", 255)) / 2.0
    if kind == "LABELMAP":
        return pixels == segment
    return pixels > 0


def seg_mask(ds: Dataset, path: Path, segment: int, volume: Volume) -> np.ndarray:
    """Boolean mask [k, j, i] of one segment on `volume`'s grid (nearest neighbour through the affines).

    The segment's frames are stacked along their normal at the stack's own spacing
    (SpacingBetweenSlices, else the smallest gap between frames); absent frames are empty. Each target
    voxel takes the frame voxel nearest to its centre, within half a frame voxel (so frames a few
    micrometres off the target slices land on them).
    """
    seg_for = _checked_frame_of_reference(ds, path, volume)
    frames = _frames(ds, path, segment)
    picked = _segment_frames(ds, path, segment, frames)
    if not picked:
        return np.zeros(volume.shape, dtype=bool)
    iop = _frame_floats(ds, picked[0], "PlaneOrientationSequence", "ImageOrientationPatient", path)
    spacing = _frame_floats(ds, picked[0], "PixelMeasuresSequence", "PixelSpacing", path)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = _frame_positions(ds, path, picked, iop)
    along = pos @ normal
    in_plane_origin = _common_in_plane_origin(pos, along, normal, segment, path)
    step = _slice_step(ds, path, picked[0], along)
    base = float(along.min())
    index = _slice_indices(along, base, step, segment, path)
    stack = _padded_stack(frames, picked, index)
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = row_dir * spacing[1]
    affine[:3, 3] = in_plane_origin + base * normal - affine[:3, :3].sum(axis=1)  # -1 voxel: the padding
    seg_volume = Volume(stack, affine, "mask", {"frame_of_reference_uid": seg_for})
    return resample_to_reference(seg_volume, volume, order=0, check_frame_of_reference=False).array > 0.5


def _checked_frame_of_reference(ds: Dataset, path: Path, volume: Volume) -> str:
    """The SEG's FrameOfReferenceUID ('' when absent); SegmentationError when it differs from the volume's."""
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    vol_for = str(volume.meta.get("frame_of_reference_uid", "") or "")
    if seg_for and vol_for and seg_for != vol_for:
        raise SegmentationError(
            f"{path}: DICOM tag FrameOfReferenceUID is {seg_for}, expected {vol_for} "
            f"(series {volume.meta.get('series_uid', '?')})"
        )
    return seg_for


def _segment_frames(ds: Dataset, path: Path, segment: int, frames: np.ndarray) -> list[int]:
    """Indices of the frames holding `segment`: a LABELMAP's non-empty frames, else the frames whose
    ReferencedSegmentNumber is `segment`."""
    if str(ds.get("SegmentationType", "")).upper() == "LABELMAP":  # every frame holds every segment
        return [f for f in range(frames.shape[0]) if frames[f].any()]
    return [f for f in range(frames.shape[0]) if segment == int(
        _group_item(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber", path))]


def _frame_floats(ds: Dataset, frame: int, group: str, keyword: str, path: Path) -> np.ndarray:
    """A multi-valued tag of `frame` (per-frame or shared functional group) as a float array."""
    return np.array([float(v) for v in _group_item(ds, frame, group, keyword, path)])


def _frame_positions(ds: Dataset, path: Path, picked: list[int], iop: np.ndarray) -> np.ndarray:
    """ImagePositionPatient (mm) of each picked frame, [n, 3]; every frame must share the orientation `iop`."""
    positions = []
    for f in picked:
        other = _frame_floats(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient", path)
        if not np.allclose(other, iop, atol=_ORIENTATION_ATOL):
            raise SegmentationError(
                f"{path}: frame {f + 1} ImageOrientationPatient {list(other)} differs from frame "
                f"{picked[0] + 1} {list(iop)} (mixed orientations in one segment)"
            )
        positions.append([float(v) for v in _group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient", path)])
    return np.asarray(positions)


def _common_in_plane_origin(pos: np.ndarray, along: np.ndarray, normal: np.ndarray, segment: int,
                            path: Path) -> np.ndarray:
    """The frames' shared position in their plane (mm); SegmentationError when they are not stacked along
    one normal."""
    in_plane = pos - np.outer(along, normal)
    if np.abs(in_plane - in_plane[0]).max() > _IN_PLANE_ATOL_MM:
        raise SegmentationError(f"{path}: frames of segment {segment} are not stacked along one normal "
                                f"(ImagePositionPatient in-plane offsets differ by up to "
                                f"{np.abs(in_plane - in_plane[0]).max():.3f} mm)")
    return in_plane[0]


def _slice_step(ds: Dataset, path: Path, first: int, along: np.ndarray) -> float:
    """Spacing of the frame stack (mm): SpacingBetweenSlices, else the smallest gap between frame positions
    `along` the normal, else (a single frame) SliceThickness."""
    gaps = np.diff(np.unique(np.round(along, 4)))
    try:
        return float(_group_item(ds, first, "PixelMeasuresSequence", "SpacingBetweenSlices", path))
    except SegmentationError:
        return float(gaps.min()) if gaps.size else float(
            _group_item(ds, first, "PixelMeasuresSequence", "SliceThickness", path))


def _slice_indices(along: np.ndarray, base: float, step: float, segment: int, path: Path) -> np.ndarray:
    """Each frame's slice index in the stack (positions `along` the normal from `base` in `step`s);
    SegmentationError when a position is off the grid by more than a tenth of a step."""
    index_f = (along - base) / step
    index = np.round(index_f).astype(int)
    if np.abs(index_f - index).max() > 0.1:
        raise SegmentationError(f"{path}: frame positions of segment {segment} are not multiples of the "
                                f"slice spacing {step:.4f} mm")
    return index


def _padded_stack(frames: np.ndarray, picked: list[int], index: np.ndarray) -> np.ndarray:
    """The picked frames placed at their slice indices in a float32 [slice, row, col] stack, padded by one
    empty voxel on every side (frames landing on one slice are combined)."""
    # One empty voxel of padding on every side: nearest-neighbour resampling drops samples even a hair
    # outside the outermost voxel centres, so frames a few micrometres off the target slices (real exports)
    # would lose their end slices / edge rows. With the padding every target voxel whose centre lies within
    # half a voxel of a frame voxel takes it, as in the interior.
    stack = np.zeros((int(index.max()) + 3, frames.shape[1] + 2, frames.shape[2] + 2), dtype=np.float32)
    for f, k in zip(picked, index):
        stack[k + 1, 1:-1, 1:-1] = np.maximum(stack[k + 1, 1:-1, 1:-1], frames[f])
    return stack
