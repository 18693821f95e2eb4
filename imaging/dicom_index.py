"""Group DICOM files of any layout (any depth, any file names) into series from their headers, and pair CT with PET.

Public API (stable; used by `fusionrx scan`, `fusionrx radiology` and the segmentation readers):

- `index_dicom(paths_or_dir) -> DicomIndex`: iterable of `SeriesInfo` (sorted by patient, study, modality,
  series UID) plus `.problems`, a list of (path, error) for files that look like DICOM but cannot be read
  and for series whose files disagree on StudyInstanceUID (grouped by SeriesInstanceUID all the same).
  Files that are not DICOM at all are skipped silently; files without an extension are read too.
- `pair_ct_pet(series) -> list[CtPetPair]`: the CT and PET series of one patient that share a
  FrameOfReferenceUID (the scanner's one coordinate system), PET-only and CT-only series included.

Headers are read by `imaging.dicom_frames.read_header` (the one header reader; `looks_like_dicom` lives there too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError
from imaging.dicom_frames import looks_like_dicom, read_header

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_LISTED_FILES = 10  # files named in one problem entry
# Only these tags are parsed per file (pydicom skips the rest, pixels included).
_INDEX_TAGS = [
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "SeriesDescription", "SeriesNumber", "SOPClassUID", "SOPInstanceUID", "NumberOfFrames",
    "ReferencedFrameOfReferenceSequence",
]


@dataclass
class SeriesInfo:
    """One DICOM series found on disk: identifiers from its headers and its files (sorted by path)."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str  # RTSTRUCT: from ReferencedFrameOfReferenceSequence; "" when absent
    modality: str  # upper case: CT, PT, MR, RTSTRUCT, SEG, ...
    files: list[Path]
    path: Path  # deepest folder that holds every file of the series
    series_description: str = ""
    sop_class_uid: str = ""
    n_frames: int = 0  # total frames over all files (a single-frame file counts 1)
    duplicates: list[Path] = field(default_factory=list)  # extra copies of an SOP instance already in `files`

    @property
    def n_files(self) -> int:
        """Number of distinct files (SOP instances) in the series."""
        return len(self.files)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (paths as strings)."""
        return {
            "patient_id": self.patient_id, "study_uid": self.study_uid, "series_uid": self.series_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid, "modality": self.modality,
            "series_description": self.series_description, "sop_class_uid": self.sop_class_uid,
            "path": str(self.path), "n_files": self.n_files, "n_frames": self.n_frames,
            "files": [str(p) for p in self.files], "duplicates": [str(p) for p in self.duplicates],
        }


@dataclass
class DicomIndex:
    """Series found under some paths (iterate it like a list) and the files that could not be read."""

    series: list[SeriesInfo]
    problems: list[tuple[str, str]]  # (path, error): corrupt or incomplete files, series mixing study UIDs

    def __iter__(self) -> Iterator[SeriesInfo]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, i: int) -> SeriesInfo:
        return self.series[i]

    def by_patient(self) -> dict[str, list[SeriesInfo]]:
        """Series grouped by PatientID (insertion order follows the sorted series)."""
        out: dict[str, list[SeriesInfo]] = {}
        for s in self.series:
            out.setdefault(s.patient_id, []).append(s)
        return out


@dataclass
class CtPetPair:
    """A CT and a PET of one patient in one coordinate system; either side may be None (PET-only, CT-only)."""

    ct: SeriesInfo | None
    pet: SeriesInfo | None
    matched_by: str  # "frame_of_reference", "study" (no shared FoR, same study) or "none"


def _iter_files(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Every regular, non-hidden file under the given files/folders (recursively, sorted, each once)."""
    roots = [paths_or_dir] if isinstance(paths_or_dir, (str, os.PathLike)) else list(paths_or_dir)
    seen: set[Path] = set()
    for root in roots:
        root = Path(root)
        if root.is_file():
            candidates: Iterable[Path] = [root]
        elif root.is_dir():
            candidates = _walk(root)
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


def _walk(root: Path) -> Iterator[Path]:
    """Files under root in sorted order, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                p = Path(dirpath) / name
                if p.is_file():
                    yield p


def _frame_of_reference(ds: Dataset) -> str:
    """FrameOfReferenceUID, or for an RTSTRUCT the first referenced one; '' when absent."""
    uid = str(ds.get("FrameOfReferenceUID", "") or "")
    if not uid:
        seq = ds.get("ReferencedFrameOfReferenceSequence")
        if seq:
            uid = str(seq[0].get("FrameOfReferenceUID", "") or "")
    return uid


def _common_parent(files: list[Path]) -> Path:
    """Deepest folder containing every file."""
    return Path(os.path.commonpath([str(p.parent.absolute()) for p in files]))


def _mixed_studies(series_uid: str, kept: str, studies: dict[str, list[Path]], folder: Path) -> tuple[str, str]:
    """Problem entry for a series whose files carry several StudyInstanceUIDs, naming the odd files."""
    odd = sorted(str(p) for uid, paths in studies.items() if uid != kept for p in paths)
    more = len(odd) - _LISTED_FILES
    shown = ", ".join(odd[:_LISTED_FILES]) + (f" and {more} more" if more > 0 else "")
    error = (f"series {series_uid}: DICOM tag StudyInstanceUID differs between its files ({len(studies)} "
             f"values); kept as one series of study {kept or '<missing>'} ({len(studies[kept])} files); "
             f"other study UID in {shown}")
    return str(folder), error


def index_dicom(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> DicomIndex:
    """Group every DICOM file under `paths_or_dir` (a folder, a file or a list of either) into series by header."""
    groups: dict[tuple[str, str, str], dict] = {}
    problems: list[tuple[str, str]] = []
    for path in _iter_files(paths_or_dir):
        if not looks_like_dicom(path):
            continue
        try:
            # The grouping tags all sit before (0028,0009): stop there (GE PET headers are 4x longer after it).
            ds = read_header(path, _INDEX_TAGS, stop_after=0x00280008)
            if not ds.get("FrameOfReferenceUID") and str(ds.get("Modality", "")).upper() == "RTSTRUCT":
                ds = read_header(path, _INDEX_TAGS)  # its frame of reference sits in (3006,0010)
        except Exception as exc:  # corrupt bytes (the reader wraps pydicom's error), or a value malformed on access
            cause = exc.__cause__ if isinstance(exc, DicomSeriesError) and exc.__cause__ else exc
            problems.append((str(path), f"unreadable DICOM header ({type(cause).__name__}: {cause})"))
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
            continue  # a DICOMDIR index, not an image
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if not series_uid or not modality:
            missing = "SeriesInstanceUID" if not series_uid else "Modality"
            problems.append((str(path), f"missing DICOM tag {missing} (truncated or incomplete file? "
                                         f"{path.stat().st_size} bytes)"))
            continue
        # One series is one SeriesInstanceUID: files of it that name another study stay in it (reported below).
        key = (str(ds.get("PatientID", "") or ""), series_uid)
        g = groups.setdefault(key, {"files": [], "sops": set(), "dups": [], "frames": 0, "first": ds,
                                    "studies": {}})
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in g["sops"]:
            g["dups"].append(path)
            continue
        g["sops"].add(sop)
        g["files"].append(path)
        g["studies"].setdefault(str(ds.get("StudyInstanceUID", "") or ""), []).append(path)
        g["frames"] += int(ds.get("NumberOfFrames", 1) or 1)
        if not _frame_of_reference(g["first"]) and _frame_of_reference(ds):
            g["first"] = ds

    series = []
    for (patient_id, series_uid), g in groups.items():
        ds = g["first"]
        study_uid = max(g["studies"], key=lambda uid: len(g["studies"][uid]))  # the majority (first on ties)
        if len(g["studies"]) > 1:
            problems.append(_mixed_studies(series_uid, study_uid, g["studies"], _common_parent(g["files"])))
        series.append(SeriesInfo(
            patient_id=patient_id, study_uid=study_uid, series_uid=series_uid,
            frame_of_reference_uid=_frame_of_reference(ds), modality=str(ds.Modality).strip().upper(),
            files=sorted(g["files"]), path=_common_parent(g["files"]),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""), n_frames=g["frames"], duplicates=sorted(g["dups"]),
        ))
    series.sort(key=lambda s: (s.patient_id, s.study_uid, s.modality, s.series_uid))
    return DicomIndex(series=series, problems=problems)


def pair_ct_pet(series: Iterable[SeriesInfo]) -> list[CtPetPair]:
    """Pair each PET with the CT of the same patient sharing its FrameOfReferenceUID (else the same study).

    When several CTs qualify, the one with the most files wins. CTs used by no PET come back as CT-only
    pairs, PETs without a CT as PET-only pairs (matched_by "none").
    """
    items = list(series)
    cts = [s for s in items if s.modality == "CT"]
    pets = [s for s in items if s.modality == "PT"]
    pairs: list[CtPetPair] = []
    used: set[str] = set()
    for pet in pets:
        same_patient = [c for c in cts if c.patient_id == pet.patient_id]
        by_for = [c for c in same_patient if pet.frame_of_reference_uid and
                  c.frame_of_reference_uid == pet.frame_of_reference_uid]
        by_study = [c for c in same_patient if c.study_uid == pet.study_uid]
        if by_for:
            ct, how = max(by_for, key=lambda c: (c.study_uid == pet.study_uid, c.n_files)), "frame_of_reference"
        elif by_study:
            ct, how = max(by_study, key=lambda c: c.n_files), "study"
        else:
            ct, how = None, "none"
        if ct is not None:
            used.add(ct.series_uid)
        pairs.append(CtPetPair(ct=ct, pet=pet, matched_by=how))
    pairs.extend(CtPetPair(ct=c, pet=None, matched_by="none") for c in cts if c.series_uid not in used)
    return pairs
