"""Applicability domain of an activity model: how close a compound is to the model's training compounds.

For a predicted (compound, target) link the domain is measured by the Tanimoto similarity (Morgan
radius 2, 2048 bits, as ``molecules.similarity``) of the compound to its nearest training compound
measured on that target (``nn_tanimoto_target``) and on any target (``nn_tanimoto_any``). A link is
in the domain when ``nn_tanimoto_target >= DOMAIN_TANIMOTO``.

Threshold: 0.40 on ECFP4-like Morgan bits, the usual "similar compound" cut-off for this fingerprint
(activity-relevant ECFP4 similarities start around 0.3-0.4, cf. Jasial et al., F1000Research 2016);
below it a prediction extrapolates from chemistry the model has not seen on that target. The
error of in- and out-of-domain test pairs is measured by ``bench/davis_bench.py`` (``domain`` rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["DOMAIN_TANIMOTO", "tanimoto_packed_matrix", "nearest_training_similarity"]

DOMAIN_TANIMOTO = 0.40


def tanimoto_packed_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto (n_a, n_b) between packed fingerprints a [n_a, bytes] and b [n_b, bytes] (0 when both empty)."""
    a64 = np.ascontiguousarray(a, dtype=np.uint8).view(np.uint64)
    b64 = np.ascontiguousarray(b, dtype=np.uint8).view(np.uint64)
    out = np.zeros((len(a64), len(b64)), dtype=np.float64)
    pop_b = np.bitwise_count(b64).sum(axis=1, dtype=np.int64)
    for i, row in enumerate(a64):
        both = np.bitwise_count(b64 & row).sum(axis=1, dtype=np.int64)
        either = np.bitwise_count(row).sum(dtype=np.int64) + pop_b - both
        np.divide(both, either, out=out[i], where=either > 0)
    return out


def nearest_training_similarity(query_smiles: Sequence[str], query_targets: Sequence[str],
                                train_smiles: Sequence[str], train_targets: Sequence[str]) -> pd.DataFrame:
    """Per query pair: nn_tanimoto_target, nn_tanimoto_any (0-1) and in_domain (bool).

    ``train_smiles[i]`` was measured on ``train_targets[i]`` (one entry per training pair). A compound
    identical to a training compound has similarity 1. Targets without training compounds get 0.
    """
    from molecules.similarity import packed_fingerprints  # RDKit only when a domain is measured

    q_unique = list(dict.fromkeys(query_smiles))
    t_unique = list(dict.fromkeys(train_smiles))
    sim = tanimoto_packed_matrix(packed_fingerprints(q_unique), packed_fingerprints(t_unique))
    q_row = {s: i for i, s in enumerate(q_unique)}
    t_col = {s: i for i, s in enumerate(t_unique)}
    by_target: dict[str, list[int]] = {}
    for s, t in zip(train_smiles, train_targets):
        by_target.setdefault(t, []).append(t_col[s])
    cols = {t: np.unique(c) for t, c in by_target.items()}
    best_any = sim.max(axis=1) if sim.shape[1] else np.zeros(len(q_unique))
    near_t = np.array([float(sim[q_row[s], cols[t]].max()) if t in cols else 0.0
                       for s, t in zip(query_smiles, query_targets)])
    near_any = np.array([float(best_any[q_row[s]]) for s in query_smiles])
    return pd.DataFrame({"nn_tanimoto_target": near_t, "nn_tanimoto_any": near_any,
                         "in_domain": near_t >= DOMAIN_TANIMOTO})
