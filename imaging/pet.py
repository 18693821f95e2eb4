"""PET activity (Bq/ml) to body-weight SUV (g/ml) from the DICOM radiopharmaceutical header."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError
from imaging.dicom_series import read_dicom_series_with_header
from imaging.volume import Volume

_SECONDS_PER_DAY = 86400.0


def _src(ds: Dataset) -> str:
    """Where a header came from, for error messages."""
    return str(getattr(ds, "filename", None) or ds.get("SOPInstanceUID", "<PET header>"))


def _positive(value: object, keyword: str, ds: Dataset) -> float:
    """A tag value as a positive float, or DicomSeriesError naming the tag."""
    if value is None or value == "":
        raise DicomSeriesError(f"{_src(ds)}: missing DICOM tag {keyword} (needed for SUVbw)")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"{_src(ds)}: DICOM tag {keyword} is not numeric: {value!r}") from exc
    if not number > 0:
        raise DicomSeriesError(f"{_src(ds)}: DICOM tag {keyword} must be > 0 for SUVbw, got {number}")
    return number


def _seconds_of_day(value: object, keyword: str, ds: Dataset) -> float:
    """DICOM TM ('HHMMSS.FFFFFF', 'HHMM', old 'HH:MM:SS') as seconds since midnight."""
    text = str(value or "").strip().replace(":", "")
    if not text:
        raise DicomSeriesError(f"{_src(ds)}: missing DICOM tag {keyword} (needed for SUVbw decay correction)")
    try:
        whole, _, frac = text.partition(".")
        if len(whole) not in (2, 4, 6) or not whole.isdigit():
            raise ValueError(text)
        hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        if hh > 23 or mm > 59 or ss > 60:
            raise ValueError(text)
        return hh * 3600.0 + mm * 60.0 + ss + (float("0." + frac) if frac else 0.0)
    except ValueError as exc:
        raise DicomSeriesError(f"{_src(ds)}: DICOM tag {keyword} is not a valid time (TM): {value!r}") from exc


def _datetime(value: object) -> dt.datetime | None:
    """DICOM DT ('YYYYMMDDHHMMSS.FFFFFF', offset ignored) or None when absent/unparseable."""
    text = str(value or "").strip()
    if len(text) < 14:
        return None
    text = text.split("+")[0].split("-")[0]
    try:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S") + dt.timedelta(
            seconds=float("0." + text.split(".")[1]) if "." in text else 0.0
        )
    except (ValueError, IndexError):
        return None


def uptake_time_s(ds: Dataset) -> float:
    """Seconds from RadiopharmaceuticalStart(Date)Time to the series start (SeriesDate/SeriesTime)."""
    info = _radiopharmaceutical(ds)
    start_dt = _datetime(info.get("RadiopharmaceuticalStartDateTime"))
    series_date = str(ds.get("SeriesDate", "") or "").strip()
    if start_dt is not None and len(series_date) == 8:
        series_s = _seconds_of_day(ds.get("SeriesTime"), "SeriesTime", ds)
        try:
            series_dt = dt.datetime.strptime(series_date, "%Y%m%d") + dt.timedelta(seconds=series_s)
        except ValueError as exc:
            raise DicomSeriesError(f"{_src(ds)}: DICOM tag SeriesDate is not a valid date: {series_date!r}") from exc
        delta = (series_dt - start_dt).total_seconds()
    else:
        start_s = _seconds_of_day(info.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime", ds)
        series_s = _seconds_of_day(ds.get("SeriesTime"), "SeriesTime", ds)
        delta = series_s - start_s
        if delta < 0:  # injected before midnight, scanned after (TM carries no date)
            delta += _SECONDS_PER_DAY
    if delta < 0:
        raise DicomSeriesError(
            f"{_src(ds)}: DICOM tags SeriesDate/SeriesTime precede RadiopharmaceuticalStartDateTime by {-delta:.0f} s"
        )
    return float(delta)


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    """First item of RadiopharmaceuticalInformationSequence (DicomSeriesError when absent)."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise DicomSeriesError(
            f"{_src(ds)}: missing DICOM tag RadiopharmaceuticalInformationSequence (needed for SUVbw)"
        )
    return seq[0]


def suv_bw_scale(ds: Dataset) -> float:
    """Factor (g/ml per Bq/ml) turning BQML activity into body-weight SUV: weight_g / dose decayed to series start."""
    units = str(ds.get("Units", "") or "").strip().upper()
    if units != "BQML":
        raise DicomSeriesError(f"{_src(ds)}: DICOM tag Units is {units or '<missing>'}, expected BQML for SUVbw")
    weight_g = _positive(ds.get("PatientWeight"), "PatientWeight", ds) * 1000.0
    info = _radiopharmaceutical(ds)
    dose_bq = _positive(info.get("RadionuclideTotalDose"), "RadionuclideTotalDose", ds)
    half_life_s = _positive(info.get("RadionuclideHalfLife"), "RadionuclideHalfLife", ds)
    correction = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if correction == "START":
        decayed_dose_bq = dose_bq * 2.0 ** (-uptake_time_s(ds) / half_life_s)
    elif correction == "ADMIN":  # image already decay-corrected to the injection time
        decayed_dose_bq = dose_bq
    elif not correction:
        raise DicomSeriesError(f"{_src(ds)}: missing DICOM tag DecayCorrection (expected START or ADMIN)")
    else:
        raise DicomSeriesError(
            f"{_src(ds)}: DICOM tag DecayCorrection is {correction}, expected START or ADMIN for SUVbw"
        )
    return weight_g / decayed_dose_bq


def read_pet_suv(directory: str | Path) -> Volume:
    """Read a PET (PT, Units BQML) series and convert to body-weight SUV (units "SUVbw", g/ml)."""
    volume, header = read_dicom_series_with_header(directory)
    if volume.meta.get("modality") != "PT":
        raise DicomSeriesError(f"{directory}: DICOM tag Modality is {volume.meta.get('modality')}, expected PT")
    header.filename = str(Path(directory) / volume.meta["files"][0])
    scale = suv_bw_scale(header)
    info = _radiopharmaceutical(header)
    return volume.with_array(
        volume.array * scale,
        units="SUVbw",
        suv_bw_scale_g_per_ml=scale,
        patient_weight_kg=float(header.PatientWeight),
        dose_bq=float(info.RadionuclideTotalDose),
        half_life_s=float(info.RadionuclideHalfLife),
        uptake_time_s=uptake_time_s(header) if str(header.get("DecayCorrection", "")).upper() == "START" else None,
    )
