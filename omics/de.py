"""Differential expression tumour vs normal: Welch t-test on log2(CPM+1), vectorised across genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

from fusion.errors import OmicsFormatError
from omics.cohort import log2_cpm


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg false discovery rate (q-values); NaN p-values stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    m = int(finite.sum())
    if m == 0:
        return q
    pf = p[finite]
    order = np.argsort(pf)
    ranked = pf[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.clip(ranked, 0.0, 1.0)
    q[finite] = out
    return q


def differential_expression(adata: ad.AnnData, group_key: str = "is_tumour") -> pd.DataFrame:
    """Per gene: log2 fold change (True group vs False group) of mean log2(CPM+1), Welch t, p, BH fdr, group means.

    Reads come from layers['counts'] when present, otherwise X is taken as raw reads.
    Rows are sorted by t (largest first).
    """
    if group_key not in adata.obs.columns:
        raise OmicsFormatError(f"differential_expression: obs lacks group column {group_key!r}")
    group = adata.obs[group_key]
    if group.isna().any() or not set(pd.unique(group)) <= {True, False}:
        raise OmicsFormatError(f"differential_expression: obs[{group_key!r}] must be boolean without missing values")
    group = group.to_numpy(dtype=bool)
    if group.sum() < 2 or (~group).sum() < 2:
        raise OmicsFormatError(
            f"differential_expression: need >= 2 samples per group, got {int(group.sum())} vs {int((~group).sum())}"
        )
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    logcpm = log2_cpm(counts)
    a, b = logcpm[group], logcpm[~group]
    with np.errstate(invalid="ignore", divide="ignore"):
        t, p = stats.ttest_ind(a, b, axis=0, equal_var=False)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    table = pd.DataFrame(
        {
            "log2_fold_change": mean_a - mean_b,
            "t": t,
            "p_value": p,
            "fdr": benjamini_hochberg(p),
            "mean_tumour": mean_a,
            "mean_normal": mean_b,
        },
        index=pd.Index(adata.var_names, name="gene"),
    )
    return table.sort_values("t", ascending=False, na_position="last")
