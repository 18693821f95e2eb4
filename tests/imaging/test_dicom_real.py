"""DICOM on real scanner files (TCIA STS, GE): indexing by header, CT/PET pairing, irregular PET slices, SUV."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from imaging.dicom_index import index_dicom, pair_ct_pet
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def dicom_root() -> Path:
    return realdata_dir() / "dicom"


def test_index_groups_real_tree_by_header(dicom_root: Path, tmp_path: Path) -> None:
    # A messy copy: non-telling names, no extensions, a non-DICOM file, a corrupt DICOM, a copied RTSTRUCT.
    src = dicom_root / "sts_cropped" / "STS_002"
    messy = tmp_path / "download"
    for n, f in enumerate(sorted(src.rglob("*.dcm"))):
        dst = messy / f"d{n % 3}" / "x" / f"IM{n:05d}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    (messy / "notes.txt").write_text("not dicom")
    broken = messy / "broken"
    broken.write_bytes((src / "CT" / "mask" / "RS.dcm").read_bytes()[:300])
    shutil.copy(src / "PET" / "mask" / "RS.dcm", messy / "copy_of_rs")

    index = index_dicom(messy)
    by_mod = {}
    for s in index:
        by_mod.setdefault(s.modality, []).append(s)
    assert sorted(by_mod) == ["CT", "PT", "RTSTRUCT"]
    assert [s.n_files for s in by_mod["CT"]] == [48] and [s.n_files for s in by_mod["PT"]] == [48]
    assert len(by_mod["RTSTRUCT"]) == 2
    truth_ct = pydicom.dcmread(next((src / "CT" / "image").glob("*.dcm")), stop_before_pixels=True)
    ct = by_mod["CT"][0]
    assert (ct.patient_id, ct.series_uid, ct.study_uid) == (
        "STS_002", truth_ct.SeriesInstanceUID, truth_ct.StudyInstanceUID)
    assert ct.frame_of_reference_uid == truth_ct.FrameOfReferenceUID and ct.path == messy
    # The RTSTRUCT's frame of reference comes from ReferencedFrameOfReferenceSequence.
    assert all(s.frame_of_reference_uid == truth_ct.FrameOfReferenceUID for s in by_mod["RTSTRUCT"])
    assert sum(len(s.duplicates) for s in by_mod["RTSTRUCT"]) == 1  # the copied RS is one SOP instance
    assert [p for p, _ in index.problems] == [str(broken)]
    assert "missing DICOM tag SeriesInstanceUID" in index.problems[0][1]  # pydicom stops quietly at the cut

    (pair,) = pair_ct_pet(index)
    assert pair.ct is ct and pair.pet is by_mod["PT"][0] and pair.matched_by == "frame_of_reference"


def test_index_pairs_two_pets_with_one_ct(dicom_root: Path) -> None:
    index = index_dicom([dicom_root / "sts_cropped" / "STS_001", dicom_root / "sts_raw_pet" / "STS_001"])
    pairs = pair_ct_pet(index)
    assert sorted(p.pet.n_files for p in pairs) == [59, 267]
    assert all(p.ct is not None and p.ct.n_files == 59 and p.matched_by == "frame_of_reference" for p in pairs)
    raw = next(s for s in index if s.modality == "PT" and s.n_files == 267)
    assert raw.path == dicom_root / "sts_raw_pet" / "STS_001" / "image"
