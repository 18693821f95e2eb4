"""PET values to SUV (body weight, lean body mass or body surface area), vendor-neutral after the QIBA pseudo-code.

QIBA "Vendor-neutral pseudo-code for SUV calculation" (QIBA FDG-PET/CT Technical Committee), as implemented:

- Units BQML: CorrectedImage (when given) must hold ATTN and DECY. DecayCorrection START: the injected dose
  decays from the injection to the scan start; ADMIN: the image is already decay-corrected to the injection,
  no decay. Scan start = SeriesDate/SeriesTime, unless an AcquisitionDate/Time of the series is earlier
  (post-processing can rewrite the series time): then the earliest acquisition. Injection =
  RadiopharmaceuticalStartDateTime, else the scan date + RadiopharmaceuticalStartTime, one day earlier when that
  lies after the scan (injected before midnight). SUVbw scale = weight_g / decayed dose_Bq.
- Units CNTS (Philips): the private group "Philips PET Private Group" (7053,00xx) gives the SUVbw scale factor
  (7053,xx00); without it, the activity-concentration scale factor (7053,xx09) turns counts into Bq/ml and
  the BQML rule follows.
- Units GML: the values are already SUVbw (scale 1).

SUVlbm = SUVbw * LBM/weight (Janmahasatian 2005 by default, as PERCIST recommends; James 1976 as an option),
SUVbsa = SUVbw * BSA_cm2/weight_g (Du Bois). All factors are per series; the volume is scaled once.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError
from imaging.dicom_frames import read_header
from imaging.dicom_series import Source, read_dicom_series_with_header
from imaging.dicom_time import date_time, parse_da, parse_dt, parse_tm, source_of
from imaging.volume import Volume

_PHILIPS_CREATOR = "Philips PET Private Group"
SUV_KINDS = {"bw": "SUVbw", "lbm": "SUVlbm", "bsa": "SUVbsa"}
LBM_FORMULAS = ("janmahasatian", "james")
_ACQUISITION_TAGS = ["AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "SOPInstanceUID"]


def _positive(value: object, keyword: str, ds: Dataset, why: str = "SUV") -> float:
    """A tag value as a positive float, or DicomSeriesError naming the tag and the file."""
    if value is None or str(value).strip() == "":
        raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag {keyword} (needed for {why})")
    try:
        number = float(value.decode("ascii").strip("\x00 ") if isinstance(value, bytes) else value)  # type: ignore
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag {keyword} is not numeric: {value!r}") from exc
    if not number > 0 or not np.isfinite(number):
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag {keyword} must be > 0 for {why}, got {number}")
    return number


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    """First item of RadiopharmaceuticalInformationSequence (DicomSeriesError when absent)."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag RadiopharmaceuticalInformationSequence "
                               f"(needed for SUV)")
    return seq[0]


def scan_start(headers: Dataset | list[Dataset]) -> dt.datetime:
    """QIBA scan start: SeriesDate/Time, or the earliest AcquisitionDate/Time of the series when that is earlier."""
    headers = [headers] if isinstance(headers, Dataset) else list(headers)
    ref = headers[0]
    series_tm = parse_tm(ref.get("SeriesTime"), "SeriesTime", ref)
    has_date = bool(str(ref.get("SeriesDate", "") or "").strip())
    series_day = parse_da(ref.SeriesDate, "SeriesDate", ref) if has_date else dt.datetime(2000, 1, 1)
    series = series_day + series_tm
    earliest = None
    for ds in headers:
        acq = date_time(ds, "Acquisition", fallback_date=series_day.strftime("%Y%m%d"))
        if acq is None:
            continue
        if not has_date and "AcquisitionDateTime" in ds:  # no series date to compare with: keep the time of day
            acq = series_day + (acq - acq.replace(hour=0, minute=0, second=0, microsecond=0))
        if not str(ds.get("AcquisitionDate", "") or "").strip() and acq < series - dt.timedelta(hours=12):
            acq += dt.timedelta(days=1)  # acquisition time without a date, after midnight
        earliest = acq if earliest is None or acq < earliest else earliest
    return earliest if earliest is not None and earliest < series else series


def injection_start(ds: Dataset, scan: dt.datetime) -> dt.datetime:
    """Injection date-time: RadiopharmaceuticalStartDateTime, else scan date + StartTime (midnight crossing)."""
    info = _radiopharmaceutical(ds)
    has_date = bool(str(ds.get("SeriesDate", "") or "").strip())
    full = parse_dt(info.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime", ds)
    if full is not None and has_date:
        return full
    if full is not None:
        tm = full - full.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        value = info.get("RadiopharmaceuticalStartTime")
        if not str(value or "").strip():
            raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag RadiopharmaceuticalStartDateTime or "
                                   f"RadiopharmaceuticalStartTime (needed for SUV decay correction)")
        tm = parse_tm(value, "RadiopharmaceuticalStartTime", ds)
    start = scan.replace(hour=0, minute=0, second=0, microsecond=0) + tm
    if start > scan:  # injected before midnight, scanned after (TM carries no date)
        start -= dt.timedelta(days=1)
    return start


def uptake_time_s(headers: Dataset | list[Dataset]) -> float:
    """Seconds from the injection to the QIBA scan start."""
    headers = [headers] if isinstance(headers, Dataset) else list(headers)
    scan = scan_start(headers)
    delta = (scan - injection_start(headers[0], scan)).total_seconds()
    if delta < 0:
        raise DicomSeriesError(f"{source_of(headers[0])}: DICOM tag RadiopharmaceuticalStartDateTime is "
                               f"{-delta:.0f} s after the scan start {scan.isoformat()}")
    return float(delta)


def _philips_factor(headers: list[Dataset], element: int, name: str) -> float | None:
    """A Philips PET private factor (7053,xx{element:02x}), equal in every file, or None when absent."""
    values = []
    for ds in headers:
        try:
            block = ds.private_block(0x7053, _PHILIPS_CREATOR)
        except KeyError:
            return None
        if element not in block:
            return None
        tag = f"Philips {name} (7053,{block.block_start + element:04x})"
        values.append(_positive(block[element].value, tag, ds, "SUV from CNTS"))
    if not np.allclose(values, values[0], rtol=1e-6):
        bad = int(np.argmax(~np.isclose(values, values[0], rtol=1e-6)))
        raise DicomSeriesError(f"{source_of(headers[bad])}: Philips {name} is {values[bad]}, expected {values[0]} "
                               f"(as in {Path(source_of(headers[0])).name}; one factor per series)")
    return values[0]


def _bqml_scale(headers: list[Dataset], info: dict[str, Any]) -> float:
    """SUVbw per Bq/ml: weight_g / dose decayed to the scan start (DecayCorrection START) or not (ADMIN)."""
    ds = headers[0]
    corrected = [str(v).strip().upper() for v in (ds.get("CorrectedImage") or [])]
    if corrected and not {"ATTN", "DECY"} <= set(corrected):
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag CorrectedImage is {corrected}, expected ATTN and DECY "
                               f"(activity not attenuation- and decay-corrected: no SUV)")
    weight_g = _positive(ds.get("PatientWeight"), "PatientWeight", ds) * 1000.0
    rp = _radiopharmaceutical(ds)
    dose_bq = _positive(rp.get("RadionuclideTotalDose"), "RadionuclideTotalDose", ds)
    half_life_s = _positive(rp.get("RadionuclideHalfLife"), "RadionuclideHalfLife", ds)
    correction = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if correction == "START":
        uptake = uptake_time_s(headers)
        decayed = dose_bq * 2.0 ** (-uptake / half_life_s)
        info["uptake_time_s"] = uptake  # the scan's date-time itself stays out: it identifies the patient
    elif correction == "ADMIN":  # image already decay-corrected to the injection time
        decayed, info["uptake_time_s"] = dose_bq, None
    elif not correction:
        raise DicomSeriesError(f"{source_of(ds)}: missing DICOM tag DecayCorrection (expected START or ADMIN)")
    else:
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag DecayCorrection is {correction}, expected START or "
                               f"ADMIN for SUV")
    info.update(dose_bq=dose_bq, half_life_s=half_life_s, decayed_dose_bq=decayed, decay_correction=correction,
                patient_weight_kg=weight_g / 1000.0)
    return weight_g / decayed


def suv_bw_scale(headers: Dataset | list[Dataset], info: dict[str, Any] | None = None) -> float:
    """Factor turning the rescaled PET values (Units BQML, CNTS or GML) into SUVbw (g/ml)."""
    headers = [headers] if isinstance(headers, Dataset) else list(headers)
    info = {} if info is None else info
    ds = headers[0]
    units = str(ds.get("Units", "") or "").strip().upper()
    info["source_units"] = units
    if units == "BQML":
        return _bqml_scale(headers, info)
    if units == "GML":
        return 1.0
    if units == "CNTS":
        suv = _philips_factor(headers, 0x00, "SUV Scale Factor")
        if suv is not None:
            info["philips_suv_scale_factor"] = suv
            return suv
        activity = _philips_factor(headers, 0x09, "Activity Concentration Scale Factor")
        if activity is not None:
            info["philips_activity_scale_factor_bqml_per_cnts"] = activity
            return activity * _bqml_scale(headers, info)
        raise DicomSeriesError(f"{source_of(ds)}: DICOM tag Units is CNTS but the Philips private tags SUV Scale "
                               f"Factor (7053,1000) and Activity Concentration Scale Factor (7053,1009) of "
                               f"'{_PHILIPS_CREATOR}' are missing (needed for SUV from counts)")
    raise DicomSeriesError(f"{source_of(ds)}: DICOM tag Units is {units or '<missing>'}, expected BQML, CNTS or GML "
                           f"for SUV")


def _height_m(ds: Dataset, info: dict[str, Any]) -> float:
    """PatientSize in m (a value over 3 is taken as cm, a common vendor quirk, and reported)."""
    size = _positive(ds.get("PatientSize"), "PatientSize", ds, "SUVlbm/SUVbsa")
    if size > 3.0:
        info["patient_size_read_as_cm"] = True
        size /= 100.0
    return size


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str, formula: str = "janmahasatian") -> float:
    """Lean body mass in kg: Janmahasatian et al. 2005 (default) or James 1976; sex 'M' or 'F'."""
    h_cm, bmi = height_m * 100.0, weight_kg / height_m ** 2
    male = sex == "M"
    if formula == "janmahasatian":
        return 9270.0 * weight_kg / ((6680.0 + 216.0 * bmi) if male else (8780.0 + 244.0 * bmi))
    if formula == "james":
        return (1.10 * weight_kg - 128.0 * (weight_kg / h_cm) ** 2) if male else \
            (1.07 * weight_kg - 148.0 * (weight_kg / h_cm) ** 2)
    raise ValueError(f"lbm formula must be one of {LBM_FORMULAS}, got {formula!r}")


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Body surface area in m^2 (Du Bois and Du Bois 1916)."""
    return 0.007184 * weight_kg ** 0.425 * (height_m * 100.0) ** 0.725


def suv_scale(headers: Dataset | list[Dataset], kind: str = "bw", lbm_formula: str = "janmahasatian"
              ) -> tuple[float, dict[str, Any]]:
    """Factor from the rescaled PET values to SUV`kind` ('bw', 'lbm', 'bsa') and what went into it."""
    if kind not in SUV_KINDS:
        raise ValueError(f"SUV kind must be one of {sorted(SUV_KINDS)}, got {kind!r}")
    headers = [headers] if isinstance(headers, Dataset) else list(headers)
    info: dict[str, Any] = {"suv_kind": SUV_KINDS[kind]}
    bw = suv_bw_scale(headers, info)
    info["suv_bw_scale_g_per_ml"] = bw
    if kind == "bw":
        return bw, info
    ds = headers[0]
    weight_kg = _positive(ds.get("PatientWeight"), "PatientWeight", ds, f"SUV{kind}")
    height_m = _height_m(ds, info)
    info.update(patient_weight_kg=weight_kg, patient_size_m=height_m)
    if kind == "lbm":
        sex = str(ds.get("PatientSex", "") or "").strip().upper()
        if sex not in ("M", "F"):
            raise DicomSeriesError(f"{source_of(ds)}: DICOM tag PatientSex is {sex or '<missing>'}, expected M or "
                                   f"F (needed for SUVlbm)")
        lbm = lean_body_mass_kg(weight_kg, height_m, sex, lbm_formula)
        info.update(lbm_kg=lbm, lbm_formula=lbm_formula)
        return bw * lbm / weight_kg, info
    bsa = body_surface_area_m2(weight_kg, height_m)
    info.update(bsa_m2=bsa)
    return bw * bsa * 1e4 / (weight_kg * 1000.0), info


def _series_headers(volume: Volume, first: Dataset) -> list[Dataset]:
    """Headers SUV needs, in slice order: the first in full, the others full for CNTS (Philips private
    factors are checked per file) and otherwise only their acquisition date/time (a cheap partial read)."""
    root = Path(volume.meta["source_dir"])
    paths = [root / name for name in volume.meta["files"]]
    if str(first.get("Units", "") or "").strip().upper() == "CNTS":
        return [first] + [read_header(p) for p in paths[1:]]
    return [first] + [read_header(p, _ACQUISITION_TAGS, stop_after=0x00080032) for p in paths[1:]]


def read_pet_suv(source: Source, kind: str = "bw", lbm_formula: str = "janmahasatian",
                 series_uid: str | None = None) -> Volume:
    """Read a PET series (Units BQML, CNTS or GML) as SUV: units 'SUVbw' (g/ml, default), 'SUVlbm' or 'SUVbsa'."""
    volume, first = read_dicom_series_with_header(source, series_uid)
    if volume.meta.get("modality") != "PT":
        raise DicomSeriesError(f"{volume.meta.get('source_dir', source)}: DICOM tag Modality is "
                               f"{volume.meta.get('modality')}, expected PT")
    scale, info = suv_scale(_series_headers(volume, first), kind, lbm_formula)
    return volume.with_array(volume.array * np.float32(scale), units=SUV_KINDS[kind], suv_scale=scale, **info)
