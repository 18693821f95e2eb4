"""DICOM SEG frames a few micrometres off the CT slices (seen on real exports) land on the nearest slice.

The SEG is built here with pydicom (BINARY, 1 bit packed, per-frame ImagePositionPatient) on a hand-built
axial grid; every planted voxel must come back, whatever the sign of the offset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from imaging.segmentation import list_rois, roi_mask
from imaging.volume import Volume
from flows.synthetic.dicom_writer import new_instance

FOR_UID = "1.2.826.0.1.3680043.8.498.77"
ORIGIN = np.array([-20.0, 15.0, -40.0])  # LPS mm of voxel [0, 0, 0]
SPACING = (2.5, 0.8, 0.9)  # mm along k (z), j (y), i (x)
SHAPE = (6, 12, 10)


def _ct() -> Volume:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, SPACING[0]]
    affine[:3, 1] = [0.0, SPACING[1], 0.0]
    affine[:3, 2] = [SPACING[2], 0.0, 0.0]
    affine[:3, 3] = ORIGIN
    return Volume(np.zeros(SHAPE), affine, "HU", {"frame_of_reference_uid": FOR_UID, "series_uid": "1.2.3"})


def _item(**tags) -> Sequence:
    ds = Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return Sequence([ds])


def _write_seg(path: Path, masks: dict[int, np.ndarray], offset_mm: np.ndarray) -> Path:
    """BINARY SEG: one frame per non-empty slice per segment, ImagePositionPatient = CT slice + offset_mm."""
    ds = new_instance("1.2.840.10008.5.1.4.1.1.66.4", generate_uid())  # Segmentation Storage
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = "SEG", "P1", generate_uid()
    ds.FrameOfReferenceUID = FOR_UID
    ds.SegmentationType = "BINARY"
    ds.SegmentSequence = Sequence()
    for number in masks:
        seg = Dataset()
        seg.SegmentNumber, seg.SegmentLabel = number, f"GTV_{number}"
        ds.SegmentSequence.append(seg)
    ds.SharedFunctionalGroupsSequence = _item(
        PlaneOrientationSequence=_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
        PixelMeasuresSequence=_item(PixelSpacing=[SPACING[1], SPACING[2]], SliceThickness=SPACING[0]),
    )
    frames, groups = [], []
    for number, mask in masks.items():
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            position = ORIGIN + np.array([0.0, 0.0, SPACING[0] * k]) + offset_mm
            groups.append(_item(SegmentIdentificationSequence=_item(ReferencedSegmentNumber=number),
                                PlanePositionSequence=_item(ImagePositionPatient=[f"{v:.6f}" for v in position]))[0])
            frames.append(mask[k].astype(np.uint8))
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(frames), SHAPE[1], SHAPE[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(np.stack(frames))
    ds.save_as(path, enforce_file_format=True)
    return path


def _planted() -> dict[int, np.ndarray]:
    three = np.zeros(SHAPE, dtype=bool)
    three[1:4, 0:12, 2:10] = True  # three slices, touching the frame edges in-plane
    single = np.zeros(SHAPE, dtype=bool)
    single[5, 3:7, 0:4] = True  # one slice: the last of the grid
    return {1: three, 2: single}


@pytest.mark.parametrize("offset_um", [(0, 0, 2), (0, 0, -2), (2, -2, 2), (-2, 2, -2)])
def test_seg_frames_micrometres_off_the_slices_keep_every_voxel(tmp_path: Path, offset_um: tuple) -> None:
    planted = _planted()
    path = _write_seg(tmp_path / "seg.dcm", planted, np.asarray(offset_um, dtype=float) / 1000.0)
    ct = _ct()
    refs = list_rois(path)
    assert [r.name for r in refs] == ["GTV_1", "GTV_2"]
    for ref in refs:
        assert np.array_equal(roi_mask(ref, ct), planted[ref.key]), ref.name


def test_seg_frames_half_a_slice_off_still_go_to_one_slice(tmp_path: Path) -> None:
    """A frame 40 % of a slice off lands on its nearest slice (not spread, not lost)."""
    planted = _planted()
    path = _write_seg(tmp_path / "seg.dcm", planted, np.array([0.0, 0.0, 0.4 * SPACING[0]]))
    mask = roi_mask(list_rois(path)[1], _ct())
    assert np.array_equal(mask, planted[2])
    assert pydicom.dcmread(path).NumberOfFrames == 4
