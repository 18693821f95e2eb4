"""Plain clinical tables (CSV/TSV): the one vocabulary of id, covariate and outcome column spellings,
a header sniffer that tells a clinical sheet from a feature matrix, and a reader into labels
(diagnosis, survival time in months, event 0/1) and covariates that never hold an outcome.

Spellings match case-insensitively and ignoring '.', '_', ' ' and '-'; a GDC entity prefix
(``demographic.``, ``diagnoses.``, ...) is dropped first, so ``demographic.vital_status`` is
``vital_status`` while TCGA pan-cancer's ``OS.time`` stays ``ostime``.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.errors import CatalogError, OmicsFormatError

DAYS_PER_MONTH = 30.4375  # 365.25 / 12
MONTHS_PER = {"days": 1.0 / DAYS_PER_MONTH, "months": 1.0, "years": 12.0}
GDC_MISSING = "'--"
# cells that mean "not known" in real exports (GDC, TCGA legacy / pan-cancer, cBioPortal)
MISSING_VALUES = (GDC_MISSING, "--", "", "NA", "N/A", "NaN", "nan", "null", "None", "Not Reported",
                  "not reported", "Unknown", "unknown", "[Not Available]", "[Not Applicable]", "[Unknown]",
                  "[Not Evaluated]", "[Discrepancy]", "[Not Reported]")
GDC_ENTITIES = ("project", "cases", "demographic", "diagnoses", "treatments", "follow_ups", "exposures",
                "family_histories", "pathology_details", "molecular_tests", "other_clinical_attributes",
                "annotations", "samples")

# ---------------------------------------------------------------------------------------- vocabulary
# patient id spellings, most specific first (GDC: the barcode case_submitter_id before the UUID case_id)
ID_COLUMNS = ("patient_id", "PatientID", "patient", "bcr_patient_barcode", "case_submitter_id", "submitter_id",
              "subject_id", "subject", "participant_id", "participant", "case_id", "case", "id")
DIAGNOSIS_COLUMNS = ("diagnosis", "primary_diagnosis", "histology", "histological_type", "histologic_type",
                     "histological_subtype", "tumor_histology", "subtype", "tumor_type", "cancer_type",
                     "oncotree_code", "disease")
# canonical covariate -> spellings (first present wins); values become numbers or lower-case strings
COVARIATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "age": ("age", "age_years", "age_at_index", "age_at_diagnosis", "age_at_initial_pathologic_diagnosis",
            "patient_age", "diagnosis_age", "age_at_dx"),
    "sex": ("sex", "gender", "is_female"),
    "race": ("race",),
    "ethnicity": ("ethnicity",),
    "stage": ("stage", "ajcc_pathologic_stage", "ajcc_pathologic_tumor_stage", "pathologic_stage", "tumor_stage",
              "clinical_stage", "ajcc_clinical_stage", "figo_stage", "overall_stage"),
    "grade": ("grade", "tumor_grade", "histological_grade", "histologic_grade", "who_grade"),
    "smoking": ("smoking", "smoking_status", "tobacco_smoking_status", "tobacco_smoking_history", "smoker"),
    "pack_years": ("pack_years", "pack_years_smoked"),
    "bmi": ("bmi", "body_mass_index"),
    "ecog": ("ecog", "ecog_performance_status", "ecog_ps"),
    "kps": ("kps", "karnofsky_performance_score"),
}
NUMERIC_COVARIATES = ("age", "pack_years", "bmi", "ecog", "kps")
GDC_DEATH_DAYS = "days_to_death"
GDC_FOLLOW_UP_DAYS = "days_to_last_follow_up"
GDC_VITAL_STATUS = "vital_status"
VITAL_STATUS_EVENT = {"dead": 1, "alive": 0}  # GDC's vital_status values; other words mean unknown there
# GDC-style pairs (time = death if dead else follow-up): GDC clinical.tsv and TCGA pan-cancer CDR spellings
_DEATH_DAYS = (GDC_DEATH_DAYS, "death_days_to")
_FOLLOW_UP_DAYS = (GDC_FOLLOW_UP_DAYS, "last_contact_days_to", "days_to_last_followup", "days_to_follow_up")

_UNIT_SUFFIX = {"months": "months", "days": "days", "time": "days", "years": "years"}  # OS.time is days


def _endpoint(prefixes: Iterable[str], times: tuple = (), events: tuple = ()) -> tuple[tuple, tuple]:
    """(time spellings with unit, event spellings with is-censoring) of one survival endpoint."""
    t = tuple((f"{p}_{s}", u) for p in prefixes for s, u in _UNIT_SUFFIX.items()) + times
    e = tuple(x for p in prefixes for x in ((f"{p}_event", False), (p, False), (f"{p}_status", False),
                                            (f"{p}_censored", True), (f"{p}_censorship", True))) + events
    return t, e


# survival endpoints in the order they are looked for; overall survival first
ENDPOINTS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, bool], ...]]] = {
    "os": _endpoint(("os", "overall_survival"),
                    times=(("survival_months", "months"), ("survival_days", "days"), ("survival_years", "years"),
                           ("survival_time", ""), ("time", "")),
                    events=(("vital_status", False), ("event", False), ("status", False), ("dead", False),
                            ("death", False), ("censorship", True), ("censored", True), ("censor", True),
                            ("is_censored", True))),
    "dss": _endpoint(("dss",)),
    "pfs": _endpoint(("pfs", "pfi")),
    "dfs": _endpoint(("dfs", "dfi")),
    "rfs": _endpoint(("rfs", "efs")),
}
# further columns that hold an outcome (or a train/validation label) and must never be a feature
_OTHER_OUTCOMES = ("os_time_days", "os_event", "year_of_death", "cause_of_death", "cause_of_death_source",
                   "tumor_status", "days_to_recurrence", "days_to_progression", "recurrence", "progression",
                   "relapse", "new_tumor_event_type", "new_tumor_event_after_initial_treatment",
                   "days_to_new_tumor_event_after_initial_treatment", "treatment_outcome", "response",
                   "best_response", "label", "target", "train", "val", "test", "split", "fold")
OUTCOME_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    [s for t, e in ENDPOINTS.values() for s, _ in (*t, *e)] + list(_DEATH_DAYS) + list(_FOLLOW_UP_DAYS)
    + list(DIAGNOSIS_COLUMNS) + list(_OTHER_OUTCOMES)))
_OUTCOME_PATTERN = re.compile(r"(os|dss|pfs|pfi|dfs|dfi|rfs|efs|ttp)(time|months?|days|years?|event|status|censor"
                              r"(ed|ship)?)?|daysto(death|lastfollowup|followup|recurrence|progression|relapse"
                              r"|newtumorevent\w*)|(lastcontact|death)daysto|survival(time|months|days|years|status)?")
# names of columns in feature matrices: gene symbols, Ensembl ids, numbered embeddings, omics and radiomics suffixes
_FEATURE_NAME = re.compile(r"ENS[A-Z]*G\d.*|.*\d|.*_(rnaseq|cnv|mut|exp|expr|meth|rna|prot)|(original|wavelet|"
                           r"log-sigma|squareroot|square|logarithm|exponential|gradient|lbp)[-_].*", re.IGNORECASE)
_GENE_SYMBOL = re.compile(r"[A-Z][A-Z0-9-]{1,14}")


def normalise(name: object) -> str:
    """A column name as the vocabulary compares it: GDC entity prefix dropped, lower case, no '._ -'."""
    text = str(name).strip()
    head, dot, tail = text.partition(".")
    if dot and head.lower() in GDC_ENTITIES:
        text = tail
    return re.sub(r"[._\s-]+", "", text.lower())


_OUTCOME_SET = frozenset(normalise(c) for c in OUTCOME_COLUMNS)
_TIME_UNITS = {normalise(s): u for times, _ in ENDPOINTS.values() for s, u in times if u}
_ID_SET = frozenset(normalise(c) for c in ID_COLUMNS)
_CLINICAL_SET = frozenset(normalise(c) for group in COVARIATE_COLUMNS.values() for c in group) | _OUTCOME_SET


def is_outcome_column(name: object) -> bool:
    """True when a column holds an outcome or label (survival time/event, vital status, diagnosis, split)."""
    key = normalise(name)
    return key in _OUTCOME_SET or _OUTCOME_PATTERN.fullmatch(key) is not None


def _is_clinical(name: str) -> bool:
    return normalise(name) in _CLINICAL_SET or is_outcome_column(name)


def _is_feature_name(name: str) -> bool:
    name = name.strip()
    return bool(_FEATURE_NAME.fullmatch(name) or _GENE_SYMBOL.fullmatch(name))


def looks_like_clinical(columns: list[str]) -> bool:
    """True for a clinical sheet's header: an id column, at least two clinical/outcome columns, and not a
    feature matrix (at most half the columns named like features: genes, ``*_rnaseq``, ``feat_12``, ...).

    Width alone does not decide: real GDC clinical.tsv exports have 150+ columns, most outside any vocabulary.
    """
    columns = [str(c) for c in columns]
    if not any(normalise(c) in _ID_SET for c in columns):
        return False
    recognised = [c for c in columns if normalise(c) not in _ID_SET and _is_clinical(c)]
    if len(recognised) < 2:
        return False
    feature_like = sum(1 for c in columns if normalise(c) not in _ID_SET and not _is_clinical(c)
                       and _is_feature_name(c))
    return 2 * feature_like <= len(columns)


# ------------------------------------------------------------------------------------ configuration
LABEL_KEYS = ("diagnosis", "time", "event", "event_is_censoring", "time_unit")


@dataclass(frozen=True)
class ClinicalLabels:
    """Which columns of a clinical table hold the labels; None means auto-detect from the vocabulary.

    ``event_is_censoring``: the event column says 1 = censored (None: from its name, 'censor...').
    ``time_unit``: days | months | years (None: from the column's name or vocabulary entry).
    """

    diagnosis: str | None = None
    time: str | None = None
    event: str | None = None
    event_is_censoring: bool | None = None
    time_unit: str | None = None

    def __post_init__(self) -> None:
        if self.time_unit is not None and self.time_unit not in MONTHS_PER:
            raise CatalogError(f"labels: key 'time_unit' must be one of {sorted(MONTHS_PER)}; found {self.time_unit!r}")

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | None, where: str = "labels") -> ClinicalLabels:
        """The run config's ``labels:`` block (``where`` names it in errors, e.g. 'run.yaml: labels')."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise CatalogError(f"{where}: expected a mapping with keys {list(LABEL_KEYS)}; found {type(mapping).__name__}")
        unknown = sorted(str(k) for k in mapping if k not in LABEL_KEYS)
        if unknown:
            raise CatalogError(f"{where}: unknown key(s) {unknown}; expected some of {list(LABEL_KEYS)}")
        for key in ("diagnosis", "time", "event"):
            value = mapping.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise CatalogError(f"{where}: key {key!r} must name a column; found {value!r}")
        censoring = mapping.get("event_is_censoring")
        if censoring is not None and not isinstance(censoring, bool):
            raise CatalogError(f"{where}: key 'event_is_censoring' must be true or false; found {censoring!r}")
        unit = mapping.get("time_unit")
        if unit is not None:
            unit = str(unit).strip().lower()
            unit = unit if unit.endswith("s") else unit + "s"
            if unit not in MONTHS_PER:
                raise CatalogError(f"{where}: key 'time_unit' must be one of {sorted(MONTHS_PER)}; "
                                   f"found {mapping['time_unit']!r}")
        columns = {k: mapping[k].strip() for k in ("diagnosis", "time", "event") if mapping.get(k) is not None}
        return cls(**columns, event_is_censoring=censoring, time_unit=unit)


# ------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True, eq=False)
class ClinicalTable:
    """One row per patient: labels (``diagnosis`` str or NaN, ``time_months`` float, ``event`` 1.0 = event,
    0.0 = censored, NaN unknown) and covariates (numbers, or lower-case strings ready for one-hot), both
    indexed by ``patients``; ``source_columns`` says which file column(s) fed each label and covariate."""

    path: Path
    patients: pd.Index
    labels: pd.DataFrame
    covariates: pd.DataFrame
    source_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def gdc_overall_survival_days(death: pd.Series, follow_up: pd.Series, event: pd.Series) -> pd.Series:
    """Overall survival in days, GDC style: days to death for the dead (event 1), days to last follow-up
    otherwise; the other one when the first is missing."""
    primary = death.where(event == 1, follow_up)
    secondary = follow_up.where(event == 1, death)
    return primary.fillna(secondary).astype(np.float64)


def _read_text_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise OmicsFormatError(f"{path}: clinical table not found")
    name = path.name.lower().removesuffix(".gz")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = [f.readline() for _ in range(64)]
    skip = next((i for i, ln in enumerate(lines) if not ln.startswith("#")), 0)  # cBioPortal '#' header lines
    first = lines[skip] if skip < len(lines) else ""
    sep = "\t" if name.endswith((".tsv", ".txt", ".tab")) or (not name.endswith(".csv") and "\t" in first) else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, skiprows=skip, keep_default_na=True,
                         na_values=list(MISSING_VALUES), skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise OmicsFormatError(f"{path}: cannot parse clinical table as {'tab' if sep == chr(9) else 'comma'}-"
                               f"separated text: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df = df.apply(lambda s: s.str.strip())
    return df.mask(df.isin(MISSING_VALUES))


def _find(columns: list[str], spellings: Iterable[str]) -> str | None:
    by_key: dict[str, str] = {}
    for c in columns:
        by_key.setdefault(normalise(c), c)
    return next((by_key[normalise(s)] for s in spellings if normalise(s) in by_key), None)


def _named(columns: list[str], name: str, path: Path, what: str) -> str:
    hit = name if name in columns else _find(columns, [name])
    if hit is None:
        raise CatalogError(f"{path}: {what} names column {name!r}, which is absent; found {columns[:20]}")
    return hit


def _numbers(values: pd.Series, path: Path, column: str, expected: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        raise OmicsFormatError(f"{path}: column {column!r} must hold {expected}; found {values[bad].iloc[0]!r} "
                               f"in {int(bad.sum())} row(s)")
    return numeric.astype(np.float64)


_EVENT_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "dead": 1, "deceased": 1, "died": 1,
                "alive": 0, "living": 0}


def _events(values: pd.Series, path: Path, column: str, censoring: bool) -> pd.Series:
    """0/1 event (NaN unknown) from numbers, true/false, yes/no, dead/alive or cBioPortal '1:DECEASED'."""
    text = values.str.lower().str.replace(r"^([01]):.*$", r"\1", regex=True)
    number = pd.to_numeric(text, errors="coerce")
    words = text.map(_EVENT_WORDS)
    event = words.where(words.notna(), number.where(number.isin((0, 1))))
    bad = event.isna() & values.notna()
    if bad.any():
        raise OmicsFormatError(f"{path}: column {column!r} must hold event values 0/1, true/false, yes/no or "
                               f"dead/alive; found {values[bad].iloc[0]!r} in {int(bad.sum())} row(s)")
    event = event.astype(np.float64)
    return 1.0 - event if censoring else event


def _unit(column: str, given: str | None, path: Path) -> str:
    """The configured unit, else the one the column's name says ('..days..'), else its vocabulary entry's."""
    key = normalise(column)
    unit = given or next((u for w, u in (("day", "days"), ("month", "months"), ("year", "years")) if w in key),
                         _TIME_UNITS.get(key, ""))
    if unit not in MONTHS_PER:
        raise CatalogError(f"{path}: column {column!r}: cannot tell the time unit from its name; "
                           f"set labels.time_unit to one of {sorted(MONTHS_PER)}")
    return unit


def _auto_time(columns: list[str], times: Iterable[tuple[str, str]], gdc: bool) -> tuple[str, ...]:
    hit = next(((c,) for s, _ in times if (c := _find(columns, [s])) is not None), ())
    if not hit and gdc:  # days_to_death / days_to_last_follow_up: combined per patient
        hit = tuple(c for c in (_find(columns, _DEATH_DAYS), _find(columns, _FOLLOW_UP_DAYS)) if c)
    return hit


def _auto_event(columns: list[str], events: Iterable[tuple[str, bool]]) -> tuple[str, bool] | None:
    return next(((c, censor) for s, censor in events if (c := _find(columns, [s])) is not None), None)


def _survival_columns(columns: list[str], labels: ClinicalLabels, path: Path
                      ) -> tuple[tuple[str, ...], str, str | None, bool]:
    """(time column(s), time unit, event column, event is censoring), from the config else the vocabulary.

    Auto-detection takes the first endpoint (OS, DSS, PFS, DFS, RFS) with both a time and an event column,
    else the first with either; a time named in the config takes the event of its own endpoint.
    """
    found = [(_auto_time(columns, t, gdc=(name == "os")), _auto_event(columns, e), {normalise(s) for s, _ in t})
             for name, (t, e) in ENDPOINTS.items()]
    named_time = _named(columns, labels.time, path, "labels.time") if labels.time is not None else None
    if named_time is not None:
        k = next((i for i, f in enumerate(found) if normalise(named_time) in f[2]), 0)
    else:
        k = next((i for i, f in enumerate(found) if f[0] and f[1]), None)
        k = k if k is not None else next((i for i, f in enumerate(found) if f[0] or f[1]), 0)
    time_cols, auto_event = ((named_time,) if named_time else found[k][0]), found[k][1]
    if labels.event is not None:
        event_col = _named(columns, labels.event, path, "labels.event")
        censor = "censor" in normalise(event_col)
    else:
        event_col, censor = auto_event if auto_event else (None, False)
    if labels.event_is_censoring is not None:
        censor = labels.event_is_censoring
    unit = _unit(time_cols[0], labels.time_unit, path) if time_cols else ""
    return time_cols, unit, event_col, censor


_SEX_WORDS = {"f": "female", "m": "male", "woman": "female", "man": "male"}


def _covariate(name: str, values: pd.Series, path: Path, column: str, warnings: list[str]) -> pd.Series:
    """A covariate's values: numbers (age in years) or lower-case strings; unreadable numbers become NaN."""
    if name in NUMERIC_COVARIATES or normalise(column) == "isfemale":
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna()
        if bad.any():
            warnings.append(f"{path}: column {column!r}: {int(bad.sum())} value(s) are not numbers (e.g. "
                            f"{values[bad].iloc[0]!r}); read as missing")
        if name == "sex":
            return numeric.map({1.0: "female", 0.0: "male"}).astype(object)
        if name == "age" and numeric.median() > 150:  # GDC's diagnoses.age_at_diagnosis is in days
            warnings.append(f"{path}: column {column!r} read as days (median {numeric.median():g}); age in years")
            numeric = numeric / 365.25
        return numeric.astype(np.float64)
    text = values.str.lower()
    return text.replace(_SEX_WORDS) if name == "sex" else text


def _one_row_per_patient(rows: pd.DataFrame, latest: list[str], path: Path, id_col: str,
                         sources: dict[str, str]) -> pd.DataFrame:
    """Collapse repeated patient rows: ``latest`` columns take their maximum, the others must agree."""
    strict = [c for c in rows.columns if c not in latest]
    grouped = rows.groupby(level=0, sort=False)
    conflicts = grouped[strict].nunique(dropna=True) > 1
    if conflicts.to_numpy().any():
        column = conflicts.columns[conflicts.any().to_numpy()][0]
        ids = list(conflicts.index[conflicts[column]])
        raise OmicsFormatError(f"{path}: patient id(s) {ids[:5]} (column {id_col!r}) appear on several rows with "
                               f"different {sources[column]!r} values; expected one row per patient "
                               f"({len(ids)} duplicated id(s))")
    one = grouped[strict].first() if strict else pd.DataFrame(index=rows.index.unique())
    for c in latest:
        one[c] = grouped[c].max()
    return one


def read_clinical_table(path: str | Path, labels: ClinicalLabels | None = None, id_map: dict | None = None,
                        *, id_column: str | None = None) -> ClinicalTable:
    """Read a plain clinical sheet (CSV or TSV, also GDC clinical.tsv / TCGA pan-cancer / cBioPortal) into
    one row per patient: labels (diagnosis, time in months, event 0/1) and outcome-free covariates.

    Args:
        path: the table; '.tsv'/'.txt' are tab-separated, '.csv' comma-separated, else sniffed.
        labels: which columns hold diagnosis / time / event (None: auto-detect from the vocabulary).
        id_map: file id -> cohort patient id (identity when unmapped); ids are stripped strings.
        id_column: the patient id column (None: the first of ``ID_COLUMNS`` present).
    Raises:
        OmicsFormatError: no id column, empty ids, a patient on several rows with different values, a
            non-numeric time, an event value other than 0/1, true/false, yes/no, dead/alive.
        CatalogError: ``labels`` or ``id_column`` names an absent column, or the time unit is unknown.

    Rows repeating a patient with the same values are one patient (GDC repeats a case per treatment);
    GDC-style days_to_death / days_to_last_follow_up take each patient's latest value, and the time is
    death for the dead, else follow-up. Negative times are read as missing, with a warning.
    """
    path, labels, id_map = Path(path), labels or ClinicalLabels(), id_map or {}
    df = _read_text_table(path)
    columns = list(df.columns)
    id_col = _patient_id_column(columns, id_column, path)
    df = _primary_diagnosis_rows(_index_by_patient(df, id_col, id_map, path), columns)
    src = _label_sources(columns, labels, id_col, path)
    warnings: list[str] = []
    rows, row_sources = _patient_rows(df, src, path, warnings)
    latest = [c for c in rows.columns if c.startswith("time")] if _is_gdc_time_pair(src.time) else []
    one = _one_row_per_patient(rows, latest, path, id_col, row_sources)
    out = _labels_frame(one, src, path, warnings)
    covariates = one[[f"cov:{n}" for n in src.covariates]].rename(columns=lambda c: c[4:])
    covariates.index.name = out.index.name = "patient_id"
    return ClinicalTable(path=path, patients=out.index, labels=out, covariates=covariates,
                         source_columns=src.source_columns(), warnings=tuple(warnings))


@dataclass(frozen=True)
class _LabelSources:
    """The file columns a clinical table's labels and covariates come from (None / () when absent)."""

    diagnosis: str | None
    time: tuple[str, ...]  # one column, or GDC's (days_to_death, days_to_last_follow_up)
    unit: str  # of the time column(s): days | months | years ('' without a time)
    event: str | None
    event_is_censoring: bool
    covariates: dict[str, str]  # canonical covariate -> column

    def source_columns(self) -> dict[str, tuple[str, ...]]:
        """ClinicalTable.source_columns: label or covariate -> the column(s) that fed it."""
        out = {k: v for k, v in {"diagnosis": (self.diagnosis,) if self.diagnosis else (),
                                 "time_months": tuple(self.time),
                                 "event": (self.event,) if self.event else ()}.items() if v}
        out.update({n: (c,) for n, c in self.covariates.items()})
        return out


def _patient_id_column(columns: list[str], id_column: str | None, path: Path) -> str:
    """The patient id column: ``id_column`` when given, else the first of ``ID_COLUMNS`` present."""
    id_col = _named(columns, id_column, path, "id_column") if id_column else _find(columns, ID_COLUMNS)
    if id_col is None:
        raise OmicsFormatError(f"{path}: no patient id column; expected one of {list(ID_COLUMNS)}, found {columns[:20]}")
    return id_col


def _index_by_patient(df: pd.DataFrame, id_col: str, id_map: dict, path: Path) -> pd.DataFrame:
    """Rows indexed by cohort patient id ('patient_id': the file's id through ``id_map``); no id may be empty."""
    if df[id_col].isna().any():
        rows = [int(i) + 1 for i in np.flatnonzero(df[id_col].isna())][:5]
        raise OmicsFormatError(f"{path}: column {id_col!r} has empty patient ids (data row(s) {rows})")
    df.index = pd.Index([id_map.get(i, i) for i in df[id_col].astype(str)], name="patient_id")
    return df


def _primary_diagnosis_rows(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """GDC: a case with several diagnoses keeps its primary one's rows (diagnosis_is_primary_disease)."""
    primary = _find(columns, ["diagnosis_is_primary_disease"])
    if primary is None:
        return df
    is_primary = df[primary].str.lower().eq("true")
    return df.loc[is_primary | ~is_primary.groupby(level=0).transform("any")]


def _label_sources(columns: list[str], labels: ClinicalLabels, id_col: str, path: Path) -> _LabelSources:
    """Which columns feed survival, diagnosis and covariates (config first, else the vocabulary); a
    covariate never comes from a column already used or holding an outcome."""
    time_cols, unit, event_col, censoring = _survival_columns(columns, labels, path)
    diag_col = _named(columns, labels.diagnosis, path, "labels.diagnosis") if labels.diagnosis else \
        _find(columns, DIAGNOSIS_COLUMNS)
    used = {id_col, diag_col, event_col, *time_cols}
    cov_sources = {name: c for name, spellings in COVARIATE_COLUMNS.items()
                   if (c := _find(columns, spellings)) is not None and c not in used and not is_outcome_column(c)}
    return _LabelSources(diagnosis=diag_col, time=tuple(time_cols), unit=unit, event=event_col,
                         event_is_censoring=censoring, covariates=cov_sources)


def _patient_rows(df: pd.DataFrame, src: _LabelSources, path: Path, warnings: list[str]
                  ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per file row, the parsed values: 'diagnosis', 'event', 'time0'[, 'time1'] (in ``src.unit``) and
    'cov:NAME'; with each such column's file column."""
    rows = pd.DataFrame(index=df.index)
    sources: dict[str, str] = {}
    if src.diagnosis is not None:
        rows["diagnosis"], sources["diagnosis"] = df[src.diagnosis], src.diagnosis
    if src.event is not None:
        rows["event"] = _events(df[src.event], path, src.event, src.event_is_censoring)
        sources["event"] = src.event
    for i, c in enumerate(src.time):
        rows[f"time{i}"] = _numbers(df[c], path, c, f"a number of {src.unit} (time to event)")
        sources[f"time{i}"] = c
    for name, c in src.covariates.items():
        rows[f"cov:{name}"] = _covariate(name, df[c], path, c, warnings)
        sources[f"cov:{name}"] = c
    return rows, sources


def _is_gdc_time_pair(time_cols: tuple[str, ...]) -> bool:
    """True when the time comes from GDC-style days_to_death / days_to_last_follow_up column(s)."""
    return len(time_cols) == 2 or (len(time_cols) == 1 and normalise(time_cols[0]) in
                                   {normalise(c) for c in (*_DEATH_DAYS, *_FOLLOW_UP_DAYS)})


def _labels_frame(one: pd.DataFrame, src: _LabelSources, path: Path, warnings: list[str]) -> pd.DataFrame:
    """The labels per patient: diagnosis, time_months (GDC pair combined; negative -> NaN, warned) and event."""
    out = pd.DataFrame(index=one.index)
    out["diagnosis"] = one["diagnosis"].astype(object) if "diagnosis" in one else np.nan
    event = one["event"] if "event" in one else pd.Series(np.nan, index=one.index)
    if len(src.time) == 2:
        days = gdc_overall_survival_days(one["time0"], one["time1"], event)
    else:
        days = one["time0"] if src.time else pd.Series(np.nan, index=one.index)
    time_months = days.astype(np.float64) * (MONTHS_PER[src.unit] if src.unit else 1.0)
    negative = time_months < 0
    for pid in time_months.index[negative]:
        warnings.append(f"{path}: patient {pid}: negative time in {list(src.time)}; read as missing")
    out["time_months"] = time_months.mask(negative)
    out["event"] = event.astype(np.float64)
    return out
