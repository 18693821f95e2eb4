"""Target ranking: combine per-gene evidence (omics, spatial, model, chemistry) into one score."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fusion.errors import FusionRxError

# evidence name -> weight; each evidence is turned into a 0..1 percentile before weighting
DEFAULT_WEIGHTS: dict[str, float] = {
    "de": 0.25,           # tumour vs normal over-expression (Welch t)
    "survival": 0.20,     # univariate Cox z (higher expression, higher hazard)
    "spatial": 0.20,      # enrichment in tumour-region spots under cellular histology
    "copy_number": 0.15,  # amplification frequency in tumours
    "mutation": 0.05,     # non-silent mutation frequency
    "model": 0.05,        # fused model attribution of the gene's expression
    "tractability": 0.10, # best pchembl of linked compounds
}


@dataclass(frozen=True)
class RankingConfig:
    """Weights of the evidence kinds; missing evidence for a gene counts as the lowest percentile."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


def percentile_scores(values: pd.Series) -> pd.Series:
    """Map raw evidence values to percentiles in [0, 1] (ties averaged; NaN -> 0)."""
    ranked = values.rank(method="average", pct=True)
    return ranked.fillna(0.0)


def rank_targets(evidence: pd.DataFrame, config: RankingConfig = RankingConfig()) -> pd.DataFrame:
    """Rank genes by the weighted mean of their evidence percentiles.

    ``evidence`` is indexed by gene with one column per evidence kind (raw values, higher = stronger).
    Returns gene, rank (1 = best), score in [0, 1], one ``<kind>_score`` percentile column per kind
    and the raw values as ``<kind>_value``.
    """
    unknown = sorted(set(evidence.columns) - set(config.weights))
    if unknown:
        raise FusionRxError(f"target ranking: evidence kinds {unknown} have no weight; "
                            f"known: {sorted(config.weights)}")
    if evidence.empty:
        raise FusionRxError("target ranking: no genes with evidence")
    kinds = [k for k in config.weights if k in evidence.columns]
    total = sum(config.weights[k] for k in kinds)
    out = pd.DataFrame(index=evidence.index)
    score = np.zeros(len(evidence))
    for k in kinds:
        pct = percentile_scores(evidence[k].astype(float))
        out[f"{k}_score"] = pct.values
        out[f"{k}_value"] = evidence[k].astype(float).values
        score += config.weights[k] * pct.values
    out["score"] = score / total
    out = out.sort_values(["score"], ascending=False, kind="mergesort")
    out["rank"] = np.arange(1, len(out) + 1)
    out.index.name = "gene"
    return out.reset_index()
