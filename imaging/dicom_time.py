"""DICOM date/time values (DA, TM, DT) as Python datetimes, with errors naming the tag and the file."""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError


def source_of(ds: Dataset) -> str:
    """Where a header came from, for error messages."""
    return str(getattr(ds, "filename", None) or ds.get("SOPInstanceUID", "<DICOM header>"))


def parse_tm(value: object, keyword: str, ds: Dataset) -> dt.timedelta:
    """DICOM TM ('HHMMSS.FFFFFF', 'HHMM', 'HH', old 'HH:MM:SS') as time since midnight."""
    text = str(value or "").strip().replace(":", "")
    if not text:
        raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag {keyword}")
    try:
        whole, _, frac = text.partition(".")
        if len(whole) not in (2, 4, 6) or not whole.isdigit():
            raise ValueError(text)
        hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        if hh > 23 or mm > 59 or ss > 60:
            raise ValueError(text)
        return dt.timedelta(hours=hh, minutes=mm, seconds=ss + (float("0." + frac) if frac else 0.0))
    except ValueError as exc:
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag {keyword} is not a valid time (TM): {value!r}") from exc


def parse_da(value: object, keyword: str, ds: Dataset) -> dt.datetime:
    """DICOM DA ('YYYYMMDD', old 'YYYY.MM.DD') as a datetime at midnight."""
    text = str(value or "").strip().replace(".", "")
    if not text:
        raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag {keyword}")
    try:
        return dt.datetime.strptime(text, "%Y%m%d")
    except ValueError as exc:
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag {keyword} is not a valid date (DA): {value!r}") from exc


def parse_dt(value: object, keyword: str, ds: Dataset) -> dt.datetime | None:
    """DICOM DT ('YYYYMMDDHHMMSS.FFFFFF&ZZXX'; the UTC offset is dropped) or None when it holds no time of day."""
    text = str(value or "").strip()
    for sign in "+-":
        text = text.split(sign)[0]
    if len(text) < 10:  # date only (or nothing): not enough for a decay time
        return None
    try:
        whole, _, frac = text.partition(".")
        stamp = dt.datetime.strptime(whole.ljust(14, "0")[:14], "%Y%m%d%H%M%S")
        return stamp + dt.timedelta(seconds=float("0." + frac) if frac else 0.0)
    except ValueError as exc:
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag {keyword} is not a valid date-time (DT): "
                               f"{value!r}") from exc


def date_time(ds: Dataset, prefix: str, fallback_date: object = None) -> dt.datetime | None:
    """`{prefix}DateTime`, else `{prefix}Date` (or `fallback_date`) + `{prefix}Time`; None when no time is given."""
    combined = parse_dt(ds.get(f"{prefix}DateTime"), f"{prefix}DateTime", ds)
    if combined is not None:
        return combined
    time_value = ds.get(f"{prefix}Time")
    if not str(time_value or "").strip():
        return None
    date_value = ds.get(f"{prefix}Date") or fallback_date
    if not str(date_value or "").strip():
        return None
    return parse_da(date_value, f"{prefix}Date", ds) + parse_tm(time_value, f"{prefix}Time", ds)
