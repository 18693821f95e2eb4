"""RTSTRUCT planar contours (patient LPS mm) -> boolean mask on a Volume's grid, placed by coordinates alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import SegmentationError
from imaging.volume import Volume

# Contours whose normal coordinates differ by less than this (mm) lie on the same plane.
PLANE_TOLERANCE_MM = 0.1
# A contour may wander off its plane by this fraction of the target slice step before it counts as tilted.
TILT_TOLERANCE = 0.5


@dataclass(frozen=True)
class RtRoi:
    """One ROI of a structure set: number, name, frame of reference and its closed planar contours (LPS mm)."""

    number: int
    name: str
    frame_of_reference_uid: str
    contours: tuple[np.ndarray, ...]


def _contour_data(item: Dataset) -> np.ndarray:
    """ContourData as float64, parsed from the raw DS bytes when possible (pydicom's DS objects are ~50x slower)."""
    if "ContourData" not in item:
        return np.zeros(0)
    raw = item.get_item("ContourData")
    value = raw.value
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace").strip(" \x00")
        return np.array(text.split("\\"), dtype=np.float64) if text else np.zeros(0)
    if isinstance(value, str):
        return np.array([float(value)])
    return np.asarray([float(v) for v in value], dtype=np.float64)


def read_rtstruct_rois(ds: Dataset, path: Path) -> list[RtRoi]:
    """ROIs of an RTSTRUCT dataset: StructureSetROISequence names joined to ROIContourSequence contours."""
    if "StructureSetROISequence" not in ds:
        raise SegmentationError(f"{path}: missing DICOM tag StructureSetROISequence (not a structure set?)")
    default_for = ""
    for item in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        default_for = str(item.get("FrameOfReferenceUID", "")) or default_for
    contours_by_number: dict[int, list[np.ndarray]] = {}
    for roi_contour in ds.get("ROIContourSequence", []) or []:
        number = int(roi_contour.get("ReferencedROINumber", -1))
        for item in roi_contour.get("ContourSequence", []) or []:
            kind = str(item.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            if kind != "CLOSED_PLANAR":
                continue  # POINT / OPEN_PLANAR enclose no area
            try:
                data = _contour_data(item)
            except ValueError as exc:
                raise SegmentationError(f"{path}: DICOM tag ContourData of ROI {number} is not numeric ({exc})") from exc
            if data.size % 3 or data.size < 9:
                raise SegmentationError(
                    f"{path}: DICOM tag ContourData of ROI {number} expected 3 or more (x, y, z) triplets, "
                    f"found {data.size} numbers"
                )
            contours_by_number.setdefault(number, []).append(data.reshape(-1, 3))
    rois = []
    for item in ds.StructureSetROISequence:
        number = int(item.get("ROINumber", -1))
        rois.append(RtRoi(
            number=number,
            name=str(item.get("ROIName", f"ROI_{number}")).strip(),
            frame_of_reference_uid=str(item.get("ReferencedFrameOfReferenceUID", "") or default_for),
            contours=tuple(contours_by_number.get(number, [])),
        ))
    return rois


def fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels [j, i] whose centres lie inside a polygon (even-odd rule), by scanlines: O(rows x vertices)."""
    out = np.zeros(shape, dtype=bool)
    y0, x0 = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    j_lo, j_hi = max(int(np.ceil(y0.min())), 0), min(int(np.floor(y0.max())), shape[0] - 1)
    if j_hi < j_lo:
        return out
    js = np.arange(j_lo, j_hi + 1, dtype=np.float64)[:, None]
    crosses = ((y0 <= js) & (y1 > js)) | ((y1 <= js) & (y0 > js))  # half-open: each vertex counted once
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(crosses, x0 + (js - y0) * (x1 - x0) / (y1 - y0), np.inf)
    xs.sort(axis=1)
    for row, (j, n) in enumerate(zip(js[:, 0].astype(int), crosses.sum(axis=1))):
        for a, b in xs[row, :n].reshape(-1, 2):
            lo, hi = max(int(np.floor(a)) + 1, 0), min(int(np.ceil(b)) - 1, shape[1] - 1)
            if hi >= lo:
                out[j, lo:hi + 1] = True
    return out


def _plane_masks(roi: RtRoi, volume: Volume, path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Contours grouped by plane: plane positions (fractional slice index k) and their XOR-filled (j, i) masks."""
    step_mm = volume.spacing_mm[0]
    rows, cols = volume.shape[1], volume.shape[2]
    placed = []  # (k position, rows j, cols i)
    for pts in roi.contours:
        kji = volume.voxel_coords(pts)
        spread_mm = float(np.ptp(kji[:, 0])) * step_mm
        if spread_mm > TILT_TOLERANCE * step_mm:
            raise SegmentationError(
                f"{path}: ROI {roi.name!r} has a contour spanning {spread_mm:.2f} mm across the slices of series "
                f"{volume.meta.get('series_uid', '?')} (expected planar contours parallel to its slices)"
            )
        placed.append((float(kji[:, 0].mean()), kji[:, 1], kji[:, 2]))
    placed.sort(key=lambda p: p[0])
    positions: list[float] = []
    masks: list[np.ndarray] = []
    for k, jj, ii in placed:
        if not positions or (k - positions[-1]) * step_mm > PLANE_TOLERANCE_MM:
            positions.append(k)
            masks.append(np.zeros((rows, cols), dtype=bool))
        masks[-1] ^= fill_polygon(jj, ii, (rows, cols))  # DICOM convention: a contour inside another on the same plane is a hole
    return np.asarray(positions), masks


def rasterise_rtstruct_roi(roi: RtRoi, volume: Volume, path: Path) -> np.ndarray:
    """Boolean mask [k, j, i] of `roi` on `volume`'s grid.

    Each contour is filled on the plane it lies on (pixel centres inside the polygon); each target
    slice takes the nearest contour plane within half a plane step (or half a slice), so contours
    drawn on another series (or on images absent from the folder) land by patient coordinates.
    Raises SegmentationError when the frames of reference differ or contours are not parallel to the slices.
    """
    vol_for = str(volume.meta.get("frame_of_reference_uid", "") or "")
    if roi.frame_of_reference_uid and vol_for and roi.frame_of_reference_uid != vol_for:
        raise SegmentationError(
            f"{path}: ROI {roi.name!r} ReferencedFrameOfReferenceUID is {roi.frame_of_reference_uid}, expected "
            f"{vol_for} (FrameOfReferenceUID of series {volume.meta.get('series_uid', '?')})"
        )
    mask = np.zeros(volume.shape, dtype=bool)
    if not roi.contours:
        return mask
    positions, planes = _plane_masks(roi, volume, path)
    plane_step = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
    reach = max(0.5, plane_step / 2.0) + 1e-6
    for k in range(volume.shape[0]):
        nearest = int(np.argmin(np.abs(positions - k)))
        if abs(positions[nearest] - k) <= reach:
            mask[k] = planes[nearest]
    return mask
