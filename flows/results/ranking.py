"""Target scoring as Open Targets does it: per-row scores in 0..1, harmonic sums within evidence types,
a weighted harmonic sum across types (weights and transforms in the versioned ``evidence_weights.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fusion.errors import FusionRxError

SCORING_FILE = Path(__file__).with_name("evidence_weights.yaml")
# stable evidence names (the disease association types); tractability is kept apart
EVIDENCE_TYPES: tuple[str, ...] = ("rna_expression", "copy_number", "survival_association",
                                   "spatial_tumour_region", "somatic_mutation", "model_attribution")
TRACTABILITY = "tractability"
TRANSFORMS = ("saturating", "linear", "relative")


class ScoringError(FusionRxError):
    """A scoring config or a weights override is malformed (names the field, expected and found)."""


@dataclass(frozen=True)
class SourceSpec:
    """How one evidence source's statistic becomes a 0..1 score."""

    name: str
    type: str
    statistic: str
    transform: str
    scale: float = 1.0
    low: float = 0.0
    high: float = 1.0
    max_fdr: float | None = None
    factor: float = 1.0


@dataclass(frozen=True)
class ScoringConfig:
    """Versioned weights of the association evidence types and the per-source transforms."""

    version: str
    weights: dict[str, float]
    sources: dict[str, SourceSpec]
    tractability: dict[str, SourceSpec] = field(default_factory=dict)
    active_pchembl: float = 6.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, recorded with each run."""
        return {"version": self.version, "weights": dict(self.weights),
                "sources": {k: vars(v) for k, v in self.sources.items()},
                "tractability": {k: vars(v) for k, v in self.tractability.items()},
                "active_pchembl": self.active_pchembl}


def _spec(name: str, raw: dict[str, Any], file: Path, type_: str | None = None) -> SourceSpec:
    if not isinstance(raw, dict):
        raise ScoringError(f"{file}: source {name!r} must be a mapping, found {raw!r}")
    transform = raw.get("transform")
    if transform not in TRANSFORMS:
        raise ScoringError(f"{file}: source {name!r} field 'transform' must be one of {TRANSFORMS}, found {transform!r}")
    known = {"type", "statistic", "transform", "scale", "low", "high", "max_fdr", "factor"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScoringError(f"{file}: source {name!r} has unknown field(s) {unknown}; expected some of {sorted(known)}")
    spec = SourceSpec(name=name, type=type_ or raw.get("type", ""), statistic=str(raw.get("statistic", "")),
                      transform=transform, scale=float(raw.get("scale", 1.0)), low=float(raw.get("low", 0.0)),
                      high=float(raw.get("high", 1.0)),
                      max_fdr=None if raw.get("max_fdr") is None else float(raw["max_fdr"]),
                      factor=float(raw.get("factor", 1.0)))
    if spec.scale <= 0 or spec.high <= spec.low:
        raise ScoringError(f"{file}: source {name!r} needs scale > 0 and high > low, found {raw}")
    return spec


def load_scoring_config(path: str | Path | None = None) -> ScoringConfig:
    """Read the versioned scoring config (default: ``flows/results/evidence_weights.yaml``)."""
    file = Path(path) if path is not None else SCORING_FILE
    if not file.is_file():
        raise ScoringError(f"{file}: scoring config not found")
    raw = yaml.safe_load(file.read_text()) or {}
    for key in ("version", "weights", "sources"):
        if key not in raw:
            raise ScoringError(f"{file}: missing field {key!r}")
    weights = validate_weights({str(k): v for k, v in raw["weights"].items()}, f"{file}: field 'weights'")
    sources = {name: _spec(name, spec, file) for name, spec in raw["sources"].items()}
    for s in sources.values():
        if s.type not in EVIDENCE_TYPES:
            raise ScoringError(f"{file}: source {s.name!r} field 'type' must be one of {EVIDENCE_TYPES}, found {s.type!r}")
    trac = dict(raw.get("tractability") or {})
    active = float(trac.pop("active_pchembl", 6.0))
    tractability = {kind: _spec(kind, spec, file, type_=TRACTABILITY) for kind, spec in trac.items()}
    return ScoringConfig(version=str(raw["version"]), weights=weights, sources=sources,
                         tractability=tractability, active_pchembl=active)


def validate_weights(weights: dict[str, Any], where: str = "weights") -> dict[str, float]:
    """Weights per association evidence type: known types only, finite and >= 0 (ScoringError otherwise)."""
    out: dict[str, float] = {}
    for name, value in weights.items():
        if name == TRACTABILITY:
            raise ScoringError(f"{where}: 'tractability' is not part of the association score; "
                               "filter on it instead (has_compound)")
        if name not in EVIDENCE_TYPES:
            raise ScoringError(f"{where}: unknown evidence type {name!r}; expected one of {list(EVIDENCE_TYPES)}")
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise ScoringError(f"{where}: weight of {name!r} must be a number, found {value!r}") from None
        if not np.isfinite(w) or w < 0:
            raise ScoringError(f"{where}: weight of {name!r} must be a finite number >= 0, found {value!r}")
        out[name] = w
    if not any(v > 0 for v in out.values()):
        raise ScoringError(f"{where}: at least one weight must be > 0, found {out}")
    return out


def parse_weights(text: str) -> dict[str, float]:
    """'TYPE=W,TYPE=W' -> weights of exactly those types (a type not named gets 0)."""
    raw: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ScoringError(f"--weights: expected TYPE=WEIGHT, found {part!r}")
        raw[name.strip()] = value.strip()
    given = validate_weights(raw, "--weights")
    return {t: given.get(t, 0.0) for t in EVIDENCE_TYPES}


DEFAULT_WEIGHTS: dict[str, float] = load_scoring_config().weights


def score_values(values: np.ndarray, spec: SourceSpec, fdr: np.ndarray | None = None) -> np.ndarray:
    """Scores in 0..1 of a source's raw statistics (NaN -> 0; rows above max_fdr -> 0)."""
    x = np.asarray(values, dtype=float)
    if spec.transform == "saturating":
        s = 1.0 - np.exp(-np.clip(x, 0.0, None) / spec.scale)
    elif spec.transform == "linear":
        s = np.clip((x - spec.low) / (spec.high - spec.low), 0.0, 1.0)
    else:
        top = np.nanmax(x) if np.isfinite(x).any() else 0.0
        s = np.clip(x / top, 0.0, 1.0) if top > 0 else np.zeros_like(x)
    s = np.where(np.isfinite(s), s, 0.0)
    if spec.max_fdr is not None and fdr is not None:
        s = np.where(np.asarray(fdr, dtype=float) <= spec.max_fdr, s, 0.0)
    return s * spec.factor


def harmonic_sums(rows: pd.DataFrame, by: str = "evidence_type") -> pd.DataFrame:
    """Per (gene, type): sum_i s_i / i^2 over its rows' scores sorted high to low, divided by the largest
    possible sum of the type (its fullest gene's row count, all at 1). Columns gene, type, score, n_rows."""
    if rows.empty:
        return pd.DataFrame(columns=["gene", by, "score", "n_rows"])
    r = rows[["gene", by, "score"]].sort_values([by, "gene", "score"], ascending=[True, True, False],
                                               kind="mergesort")
    i = r.groupby([by, "gene"], sort=False).cumcount().to_numpy() + 1
    r = r.assign(term=r["score"].to_numpy() / i**2)
    g = r.groupby([by, "gene"], sort=True).agg(total=("term", "sum"), n_rows=("score", "size")).reset_index()
    n_max = g.groupby(by)["n_rows"].transform("max").to_numpy()
    norm = np.array([np.sum(1.0 / np.arange(1, n + 1) ** 2) for n in range(0, int(n_max.max()) + 1)])
    g["score"] = np.clip(g["total"].to_numpy() / norm[n_max], 0.0, 1.0)
    return g[["gene", by, "score", "n_rows"]]


def weighted_harmonic_sum(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Association score per gene [G] from type scores [G, T] in 0..1 and weights [T] >= 0 (vectorised).

    sum_i w s / i^2 over the types sorted by w s (largest first), divided by the same sum with every s = 1.
    """
    w = np.asarray(weights, dtype=float)
    ws = np.nan_to_num(np.asarray(matrix, dtype=float)) * w
    ws = -np.sort(-ws, axis=1)
    decay = 1.0 / np.arange(1, ws.shape[1] + 1) ** 2
    norm = float(np.sort(w)[::-1] @ decay)
    if norm <= 0:
        raise ScoringError(f"weights {w.tolist()}: at least one must be > 0")
    return ws @ decay / norm


def rank_order(genes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices sorting genes by score (high first), ties by gene symbol: deterministic ranks."""
    return np.lexsort((genes, -scores))


def rank_targets(type_scores: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """Rank genes (index) from their per-type scores (columns = evidence types, 0..1, missing = 0).

    Returns gene, rank (1 = best), score and the per-type columns, best first.
    """
    if type_scores.empty:
        raise FusionRxError("target ranking: no genes with evidence")
    weights = validate_weights(weights)
    types = [t for t in EVIDENCE_TYPES if t in weights]
    m = type_scores.reindex(columns=types).fillna(0.0)
    score = weighted_harmonic_sum(m.to_numpy(), np.array([weights[t] for t in types]))
    genes = m.index.to_numpy(dtype=str)
    order = rank_order(genes, score)
    out = m.iloc[order].copy()
    out.insert(0, "score", score[order])
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out.index.name = "gene"
    return out.reset_index()
