"""Segmentations as ROIs: RTSTRUCT, DICOM SEG and NIfTI masks -> boolean masks on a given Volume's grid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError, SegmentationError
from imaging.dicom_frames import read_header, read_image
from imaging.dicom_seg import seg_mask, seg_segments
from imaging.nifti import read_nifti
from imaging.resample import resample_to_reference
from imaging.rtstruct import rasterise_rtstruct_roi, read_rtstruct_rois
from imaging.volume import Volume

RTSTRUCT, SEG, NIFTI = "rtstruct", "seg", "nifti"


@dataclass(frozen=True)
class RoiRef:
    """Where one ROI lives: file, kind (rtstruct / seg / nifti), name, key inside the file, frame of reference."""

    path: str
    kind: str
    name: str
    key: int
    frame_of_reference_uid: str = ""
    patient_id: str = ""


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _read_dicom(path: Path, headers_only: bool = False) -> Dataset:
    """The segmentation file through the one DICOM reader (header only, or with SEG pixel data)."""
    try:
        ds = read_header(path) if headers_only else read_image(path, fast=False)
    except DicomSeriesError as exc:
        raise SegmentationError(str(exc)) from exc
    if ds is None:
        raise SegmentationError(f"{path}: unreadable DICOM file (not DICOM)")
    return ds


def segmentation_kind(path: str | os.PathLike, ds: Dataset | None = None) -> str:
    """'nifti', 'rtstruct' or 'seg' from the content (DICOM Modality), SegmentationError otherwise."""
    path = Path(path)
    if _is_nifti(path):
        return NIFTI
    ds = ds if ds is not None else _read_dicom(path, headers_only=True)
    modality = str(ds.get("Modality", "")).upper()
    if modality in ("RTSTRUCT", "SEG"):
        return modality.lower()
    raise SegmentationError(f"{path}: DICOM tag Modality is {modality or '<missing>'}, expected RTSTRUCT or SEG")


def list_rois(path: str | os.PathLike) -> list[RoiRef]:
    """Every ROI a segmentation file holds (RTSTRUCT ROIs, SEG segments, NIfTI labels), in file order."""
    path = Path(path)
    if _is_nifti(path):
        labels = np.unique(read_nifti(path).array)
        labels = [int(v) for v in labels if v != 0]
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        if len(labels) <= 1:
            return [RoiRef(str(path), NIFTI, stem, 0)]
        return [RoiRef(str(path), NIFTI, f"{stem}:{v}", v) for v in labels]
    ds = _read_dicom(path, headers_only=True)
    kind = segmentation_kind(path, ds)
    pid = str(ds.get("PatientID", ""))
    if kind == RTSTRUCT:
        return [RoiRef(str(path), RTSTRUCT, r.name, r.number, r.frame_of_reference_uid, pid)
                for r in read_rtstruct_rois(ds, path)]
    for_uid = str(ds.get("FrameOfReferenceUID", "") or "")
    return [RoiRef(str(path), SEG, label, number, for_uid, pid) for number, label in seg_segments(ds, path).items()]


def roi_mask(ref: RoiRef, volume: Volume) -> np.ndarray:
    """Boolean mask [k, j, i] of one ROI on `volume`'s grid (shape volume.shape)."""
    path = Path(ref.path)
    if ref.kind == NIFTI:
        labels = read_nifti(path, units="label")
        inside = labels.array > 0 if ref.key == 0 else labels.array == ref.key
        moved = resample_to_reference(labels.with_array(inside.astype(np.float32)), volume, order=0,
                                      check_frame_of_reference=False)
        return moved.array > 0.5
    ds = _read_dicom(path)
    if ref.kind == RTSTRUCT:
        for roi in read_rtstruct_rois(ds, path):
            if roi.number == ref.key:
                return rasterise_rtstruct_roi(roi, volume, path)
        raise SegmentationError(f"{path}: ROI number {ref.key} ({ref.name!r}) not in StructureSetROISequence")
    if ref.kind == SEG:
        return seg_mask(ds, path, ref.key, volume)
    raise SegmentationError(f"{path}: unknown segmentation kind {ref.kind!r}, expected rtstruct, seg or nifti")


def find_roi(refs: list[RoiRef], name: str) -> RoiRef:
    """The ROI called `name` (exact, else case-insensitive); SegmentationError listing the names when absent."""
    exact = [r for r in refs if r.name == name] or [r for r in refs if r.name.lower() == name.lower()]
    if not exact:
        names = sorted({r.name for r in refs})
        raise SegmentationError(f"ROI {name!r} not found; segmentations hold {names or 'no ROIs'}")
    if len(exact) > 1:
        raise SegmentationError(f"ROI {name!r} is ambiguous: found in {[r.path for r in exact]}")
    return exact[0]


def read_roi_mask(path: str | os.PathLike, name: str, volume: Volume) -> np.ndarray:
    """Boolean mask of the ROI `name` of segmentation file `path` on `volume`'s grid."""
    return roi_mask(find_roi(list_rois(path), name), volume)
