"""The pulled folder: one file per SOP instance under its study and series, written atomically, and the
report of one pull (per study: instances found, pulled, already there, or the error that stopped it)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydicom import Dataset
from pydicom.filewriter import dcmwrite

_UID = re.compile(r"^[0-9.]{1,64}$")
T = TypeVar("T")


@dataclass(frozen=True)
class StudyRef:
    """A study found on the PACS."""

    patient_id: str
    study_uid: str
    description: str = ""


@dataclass
class StudyResult:
    """What one pull did for one study."""

    patient_id: str
    study_uid: str
    n_instances: int = 0
    pulled: int = 0
    already_present: int = 0
    error: str | None = None


@dataclass
class PullReport:
    """A pull: where it went, what it found and pulled, and which studies failed (and why)."""

    source: str
    out_dir: str
    studies: list[StudyResult] = field(default_factory=list)
    wall_s: float = 0.0
    bytes_written: int = 0

    @property
    def pulled(self) -> int:
        return sum(s.pulled for s in self.studies)

    @property
    def failed(self) -> list[StudyResult]:
        return [s for s in self.studies if s.error]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (counts, per-study results, instances per second)."""
        return {"source": self.source, "out_dir": self.out_dir, "n_studies": len(self.studies),
                "n_instances": sum(s.n_instances for s in self.studies), "pulled": self.pulled,
                "already_present": sum(s.already_present for s in self.studies),
                "failed": [{"patient_id": s.patient_id, "study_uid": s.study_uid, "error": s.error}
                           for s in self.failed],
                "wall_s": round(self.wall_s, 3), "bytes_written": self.bytes_written,
                "instances_per_s": round(self.pulled / self.wall_s, 2) if self.wall_s > 0 else None,
                "studies": [asdict(s) for s in self.studies]}


def _safe_uid(uid: str, what: str) -> str:
    uid = str(uid).strip()
    if not _UID.match(uid):  # never let a remote value choose a path outside the pull folder
        raise ValueError(f"{what} {uid!r} is not a DICOM UID")
    return uid


def instance_path(out_dir: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Where one SOP instance lands: OUT/<study>/<series>/<sop>.dcm (UIDs checked, never path parts)."""
    return (Path(out_dir) / _safe_uid(study_uid, "StudyInstanceUID") / _safe_uid(series_uid, "SeriesInstanceUID")
            / f"{_safe_uid(sop_uid, 'SOPInstanceUID')}.dcm")


def pulled_sop_uids(out_dir: Path, study_uid: str | None = None) -> set[str]:
    """SOP instance UIDs already in the pull folder (of one study, or all), from the file names."""
    root = Path(out_dir) / study_uid if study_uid else Path(out_dir)
    if not root.exists():
        return set()
    return {p.stem for p in root.rglob("*.dcm") if not p.name.startswith(".")}


def write_instance(out_dir: Path, ds: Dataset) -> int:
    """Write one received instance as a DICOM Part-10 file (temp name, then rename); returns bytes."""
    path = instance_path(out_dir, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dcmwrite(tmp, ds, enforce_file_format=True)
    size = tmp.stat().st_size
    tmp.replace(path)
    return size


def with_retries(call: Callable[[], T], retryable: Callable[[BaseException], bool], attempts: int = 4,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call, retrying errors that `retryable` accepts with exponential backoff (0.5, 1, 2 s ...); after
    the last attempt (or on an error that is not retryable) the error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - filtered by `retryable`
            if attempt == attempts or not retryable(exc):
                raise
            sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most `size` items."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
