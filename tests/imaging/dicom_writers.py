"""Small DICOM writers for the imaging tests: a minimal RTSTRUCT with CLOSED_PLANAR contours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from flows.synthetic.dicom_writer import new_instance

RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"


def write_rtstruct(path: Path, rois: dict[str, list[np.ndarray]], for_uid: str,
                   frame_sequence: bool = True) -> Path:
    """Minimal RTSTRUCT: one ROI per name with CLOSED_PLANAR contours (no referenced images at all);
    ``frame_sequence`` adds the ReferencedFrameOfReferenceSequence (some writers omit it)."""
    ds = new_instance(RT_STRUCTURE_SET, generate_uid())
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = "RTSTRUCT", "P1", generate_uid()
    if frame_sequence:
        ref = Dataset()
        ref.FrameOfReferenceUID = for_uid
        ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        item = Dataset()
        item.ROINumber, item.ROIName, item.ReferencedFrameOfReferenceUID = number, name, for_uid
        ds.StructureSetROISequence.append(item)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ContourSequence = number, Sequence()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
            c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path
