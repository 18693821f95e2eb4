"""Experiment specs (YAML): validated keys, table and splits loading, into fusion's ExperimentData.

Paths in a spec are relative to the working directory when they exist there, else to the spec's folder.
Every error names the spec file and the key.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fusion.errors import SpecError
from fusion.experiment import ExperimentOptions

TOP_KEYS = {"name", "table", "store", "id", "modalities", "covariates", "task", "splits", "folds", "repeats", "seed",
            "strategies", "reference", "reference_cohort", "options", "tracking_uri", "description"}
TASK_KEYS = {"kind", "time", "event", "event_is_censoring", "label", "heads"}
OPTION_KEYS = set(ExperimentOptions.__dataclass_fields__) - {"strategies", "heads", "seed", "modality_filter",
                                                              "encoder_factories"}
BAG_KEYS = {"bags", "slide_column"}  # a bag modality: {bags: FOLDER[, slide_column: COLUMN]}


@dataclass
class ExperimentSpec:
    """A validated experiment spec (paths resolved)."""

    path: Path
    raw: dict[str, Any]
    name: str
    table: Path | None
    store: Path | None
    id: str
    modalities: dict[str, str]
    covariates: list[str]
    task: dict[str, Any]
    splits: Path | None
    folds: int | None
    repeats: int
    seed: int
    strategies: list[str]
    reference: Path | None
    reference_cohort: str | None
    options: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    bags: dict[str, dict[str, Any]] = field(default_factory=dict)  # bag modality -> {bags: folder, slide_column}

    def fail(self, key: str, problem: str) -> SpecError:
        """A SpecError naming this spec's file and ``key``."""
        return SpecError(f"{self.path}: key '{key}': {problem}")

    def experiment_options(self) -> ExperimentOptions:
        """ExperimentOptions from the spec's strategies, heads, seed and ``options``."""
        return ExperimentOptions(strategies=self.strategies, heads=self.task.get("heads", ["cox"]), seed=self.seed,
                                 **self.options)


def _resolve(spec_path: Path, value: Any, key: str) -> Path:
    p = Path(str(value)).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = spec_path.parent / p
    if alt.exists():
        return alt
    raise SpecError(f"{spec_path}: key '{key}': path '{value}' exists neither from the working directory nor "
                    f"from the spec's folder")


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec file (unknown keys, types, required keys per task kind)."""
    path = Path(path)
    raw = _read_raw(path)

    def fail(key: str, problem: str) -> SpecError:
        return SpecError(f"{path}: key '{key}': {problem}")

    _check_top_keys(raw, fail)
    globs, bags = _split_modalities(raw, path, fail)
    task = _checked_task(raw["task"], fail)
    if ("splits" in raw) == ("folds" in raw):
        raise fail("splits", "give exactly one of 'splits' (a folder of splits_K.csv) or 'folds' (an integer)")
    options = _checked_options(raw, fail)
    strategies = _checked_strategies(raw, globs, bags, fail)
    folds = raw.get("folds")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise fail("folds", f"expected an integer >= 2, found {folds!r}")
    return ExperimentSpec(
        path=path, raw=raw, name=str(raw["name"]),
        table=_resolve(path, raw["table"], "table") if "table" in raw else None,
        store=_resolve(path, raw["store"], "store") if "store" in raw else None,
        id=str(raw["id"]), modalities=globs, bags=bags,
        covariates=list(raw.get("covariates") or []), task=task,
        splits=_resolve(path, raw["splits"], "splits") if "splits" in raw else None,
        folds=folds, repeats=int(raw.get("repeats", 1)), seed=int(raw.get("seed", 0)), strategies=strategies,
        reference=_resolve(path, raw["reference"], "reference") if raw.get("reference") else None,
        reference_cohort=raw.get("reference_cohort"), options=dict(options), tracking_uri=raw.get("tracking_uri"))


def _read_raw(path: Path) -> dict[str, Any]:
    """The spec file's top-level mapping; SpecError when it is unreadable, not YAML or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the spec as YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    return raw


def _check_top_keys(raw: dict, fail) -> None:
    """Top-level keys: all known, the required ones present, one of table/store, a non-empty modalities map."""
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; expected one of {sorted(TOP_KEYS)}")
    for key in ("name", "id", "modalities", "task"):
        if key not in raw:
            raise fail(key, "required key is missing")
    if ("table" in raw) == ("store" in raw):
        raise fail("table", "give exactly one of 'table' (a feature table) or 'store' (a FusionRx store)")
    if not isinstance(raw["modalities"], dict) or not raw["modalities"]:
        raise fail("modalities", "expected a mapping name -> column glob (or -> {bags: FOLDER})")


def _checked_task(task: Any, fail) -> dict[str, Any]:
    """The ``task`` block checked (known keys, kind and its required keys, heads), with ``heads`` filled in."""
    if not isinstance(task, dict):
        raise fail("task", f"expected a mapping, found {type(task).__name__}")
    bad = sorted(set(task) - TASK_KEYS)
    if bad:
        raise fail(f"task.{bad[0]}", f"unknown key; expected one of {sorted(TASK_KEYS)}")
    kind = task.get("kind")
    need = {"survival": ("time", "event"), "classification": ("label",), "regression": ("label",)}
    if kind not in need:
        raise fail("task.kind", f"expected one of {list(need)}, found {kind!r}")
    for k in need[kind]:
        if k not in task:
            raise fail(f"task.{k}", f"required for task kind '{kind}'")
    heads = task.get("heads", ["cox"])
    if not isinstance(heads, list) or not set(heads) <= {"cox", "nll"}:
        raise fail("task.heads", f"expected a list of 'cox' / 'nll', found {heads!r}")
    return dict(task, heads=heads)


def _checked_options(raw: dict, fail) -> dict[str, Any]:
    """The ``options`` block ({} when absent); every key must be an ExperimentOptions field."""
    options = raw.get("options") or {}
    bad = sorted(set(options) - OPTION_KEYS)
    if bad:
        raise fail(f"options.{bad[0]}", f"unknown key; expected one of {sorted(OPTION_KEYS)}")
    return options


def _checked_strategies(raw: dict, globs: dict[str, str], bags: dict[str, dict[str, Any]], fail) -> list[str]:
    """The fusion strategies (default: early, late, attention, kronecker): registered neural ones (not 'single')
    or 'experts' (classical per-modality experts, fusion.experts), and an instance-level one only with both a
    bag and a flat modality."""
    strategies = raw.get("strategies", ["early", "late", "attention", "kronecker"])
    from fusion.experiment import EXPERTS
    from fusion.strategies import FUSION_STRATEGIES

    known = (set(FUSION_STRATEGIES) - {"single"}) | {EXPERTS}
    wrong = [s for s in strategies if s not in known]
    if wrong:
        raise fail("strategies", f"unknown strategy {wrong[0]!r}; known: {sorted(known)}")
    inst = [s for s in strategies if getattr(FUSION_STRATEGIES.get(s), "instance_level", False)]
    if inst and (not bags or not globs):
        raise fail("strategies", f"'{inst[0]}' needs at least one bag modality ({{bags: FOLDER}}) and one flat "
                                 f"(column glob) modality; found bag modalities {sorted(bags)}, flat {sorted(globs)}")
    return list(strategies)


def _split_modalities(raw: dict, path: Path, fail) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(flat modality -> column glob, bag modality -> {'bags': folder, 'slide_column': column or None}).

    Table specs resolve the bag folder like any path; store specs keep it as a folder name inside the store."""
    globs, bags = {}, {}
    for name, value in raw["modalities"].items():
        key = f"modalities.{name}"
        if isinstance(value, dict):
            bad = sorted(set(value) - BAG_KEYS)
            if bad:
                raise fail(f"{key}.{bad[0]}", f"unknown key; expected one of {sorted(BAG_KEYS)}")
            if "bags" not in value:
                raise fail(f"{key}.bags", "required for a bag modality (a folder of per-patient or per-slide bags)")
            folder = value["bags"]
            if "store" in raw and value.get("slide_column") is not None:
                raise fail(f"{key}.slide_column", "only for table specs; a store's bags are one file per patient")
            if "table" in raw:
                folder = _resolve(path, folder, f"{key}.bags")
            bags[str(name)] = {"bags": folder, "slide_column": value.get("slide_column")}
        elif isinstance(value, (str, int, float)):
            globs[str(name)] = str(value)
        else:
            raise fail(key, f"expected a column glob or a mapping {{bags: FOLDER}}, found {type(value).__name__}")
    return globs, bags


def read_table(path: Path) -> pd.DataFrame:
    """A CSV/TSV or parquet table, zipped or not; a zip's single member is read in memory, never
    extracted (MCAT's member is named '../dataset_csv/*.csv.zip' but holds plain CSV: content decides)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise SpecError(f"{path}: key 'table': expected one member in the zip, found {len(members)}")
            data = z.read(members[0])
        return _parse_bytes(data, members[0], path)
    return _parse_bytes(path.read_bytes(), path.name, path)


def _parse_bytes(data: bytes, name: str, path: Path) -> pd.DataFrame:
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [m for m in z.namelist() if not m.endswith("/")]
            return _parse_bytes(z.read(members[0]), members[0], path)
    if data[:4] == b"PAR1":
        return pd.read_parquet(io.BytesIO(data))
    sep = "\t" if ".tsv" in name or ".txt" in name else ","
    try:
        return pd.read_csv(io.BytesIO(data), sep=sep, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: key 'table': cannot parse '{name}' as CSV/TSV or parquet: {exc}") from exc


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
