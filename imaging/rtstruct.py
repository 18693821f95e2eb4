"""RTSTRUCT planar contours (patient LPS mm) -> boolean mask on a Volume's grid, placed by coordinates alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from skimage.draw import polygon as draw_polygon

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
            data = np.asarray([float(v) for v in item.get("ContourData", [])], dtype=np.float64)
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
        rr, cc = draw_polygon(jj, ii, shape=(rows, cols))
        filled = np.zeros((rows, cols), dtype=bool)
        filled[rr, cc] = True
        masks[-1] ^= filled  # DICOM convention: a contour inside another on the same plane is a hole
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
