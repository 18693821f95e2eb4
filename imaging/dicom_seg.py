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
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    vol_for = str(volume.meta.get("frame_of_reference_uid", "") or "")
    if seg_for and vol_for and seg_for != vol_for:
        raise SegmentationError(
            f"{path}: DICOM tag FrameOfReferenceUID is {seg_for}, expected {vol_for} "
            f"(series {volume.meta.get('series_uid', '?')})"
        )
    frames = _frames(ds, path, segment)
    if str(ds.get("SegmentationType", "")).upper() == "LABELMAP":  # every frame holds every segment
        picked = [f for f in range(frames.shape[0]) if frames[f].any()]
    else:
        picked = [f for f in range(frames.shape[0]) if segment == int(
            _group_item(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber", path))]
    if not picked:
        return np.zeros(volume.shape, dtype=bool)

    iop = np.array([float(v) for v in _group_item(ds, picked[0], "PlaneOrientationSequence",
                                                   "ImageOrientationPatient", path)])
    spacing = np.array([float(v) for v in _group_item(ds, picked[0], "PixelMeasuresSequence", "PixelSpacing", path)])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = []
    for f in picked:
        other = np.array([float(v) for v in _group_item(ds, f, "PlaneOrientationSequence",
                                                         "ImageOrientationPatient", path)])
        if not np.allclose(other, iop, atol=_ORIENTATION_ATOL):
            raise SegmentationError(
                f"{path}: frame {f + 1} ImageOrientationPatient {list(other)} differs from frame "
                f"{picked[0] + 1} {list(iop)} (mixed orientations in one segment)"
            )
        positions.append([float(v) for v in _group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient", path)])
    pos = np.asarray(positions)
    along = pos @ normal
    in_plane = pos - np.outer(along, normal)
    if np.abs(in_plane - in_plane[0]).max() > _IN_PLANE_ATOL_MM:
        raise SegmentationError(f"{path}: frames of segment {segment} are not stacked along one normal "
                                f"(ImagePositionPatient in-plane offsets differ by up to "
                                f"{np.abs(in_plane - in_plane[0]).max():.3f} mm)")
    gaps = np.diff(np.unique(np.round(along, 4)))
    try:
        step = float(_group_item(ds, picked[0], "PixelMeasuresSequence", "SpacingBetweenSlices", path))
    except SegmentationError:
        step = float(gaps.min()) if gaps.size else float(
            _group_item(ds, picked[0], "PixelMeasuresSequence", "SliceThickness", path))
    base = float(along.min())
    index_f = (along - base) / step
    index = np.round(index_f).astype(int)
    if np.abs(index_f - index).max() > 0.1:
        raise SegmentationError(f"{path}: frame positions of segment {segment} are not multiples of the "
                                f"slice spacing {step:.4f} mm")
    # One empty voxel of padding on every side: nearest-neighbour resampling drops samples even a hair
    # outside the outermost voxel centres, so frames a few micrometres off the target slices (real exports)
    # would lose their end slices / edge rows. With the padding every target voxel whose centre lies within
    # half a voxel of a frame voxel takes it, as in the interior.
    stack = np.zeros((int(index.max()) + 3, frames.shape[1] + 2, frames.shape[2] + 2), dtype=np.float32)
    for f, k in zip(picked, index):
        stack[k + 1, 1:-1, 1:-1] = np.maximum(stack[k + 1, 1:-1, 1:-1], frames[f])
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = row_dir * spacing[1]
    affine[:3, 3] = in_plane[0] + base * normal - affine[:3, :3].sum(axis=1)
    seg_volume = Volume(stack, affine, "mask", {"frame_of_reference_uid": seg_for})
    return resample_to_reference(seg_volume, volume, order=0, check_frame_of_reference=False).array > 0.5
