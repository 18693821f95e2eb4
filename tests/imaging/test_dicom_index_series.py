"""Indexing groups a series by SeriesInstanceUID even when its files disagree on StudyInstanceUID."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from imaging.dicom_index import index_dicom
from imaging.dicom_series import read_dicom_series
from tests.realdata import realdata_dir


def _write_slice(path: Path, series_uid: str, study_uid: str, z: float) -> Path:
    """Minimal 4x4 CT slice (headers the index and the series reader need)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, "1.2.3.4"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_one_series_with_a_stray_study_uid_stays_whole_and_is_reported(tmp_path: Path) -> None:
    series_uid, study, other = generate_uid(), generate_uid(), generate_uid()
    files = [_write_slice(tmp_path / f"s{k}.dcm", series_uid, other if k == 2 else study, 2.0 * k) for k in range(5)]
    index = index_dicom(tmp_path)
    assert len(index) == 1
    (series,) = index
    assert series.files == files and series.study_uid == study and series.series_uid == series_uid
    ((path, error),) = index.problems
    assert path == str(tmp_path)
    assert f"series {series_uid}" in error and "StudyInstanceUID" in error and str(files[2]) in error
    assert str(files[0]) not in error


def test_real_ct_series_with_one_relabelled_study_is_read_whole(tmp_path: Path) -> None:
    """STS_002 CT (48 slices) with one slice's StudyInstanceUID changed: still one 48-slice series."""
    src = realdata_dir("dicom", "sts_cropped", "STS_002", "CT", "image")
    dst = tmp_path / "ct"
    shutil.copytree(src, dst)
    odd = sorted(dst.glob("*.dcm"))[20]
    ds = pydicom.dcmread(odd)
    ds.StudyInstanceUID = generate_uid()
    ds.save_as(odd)
    index = index_dicom(dst)
    assert [s.n_files for s in index] == [48]
    assert len(index.problems) == 1 and str(odd) in index.problems[0][1]
    ct = read_dicom_series(index[0])
    reference = read_dicom_series(src)
    assert ct.shape == reference.shape and np.array_equal(ct.array, reference.array)
