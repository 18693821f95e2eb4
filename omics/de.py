"""Differential expression: the one Welch t-test and log2 fold change (bulk tumour vs normal, spatial regions).

``welch_de`` is the test every caller shares; ``differential_expression`` applies it to bulk read counts.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
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


def _group_moments(x: object, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and unbiased variance of the selected rows of a dense or scipy-sparse matrix."""
    sub = x[rows]
    if sp.issparse(sub):
        sub = sub.astype(np.float64)
        n = sub.shape[0]
        mean = np.asarray(sub.mean(axis=0)).ravel()
        sq = np.asarray(sub.multiply(sub).mean(axis=0)).ravel()
        return mean, np.maximum(sq - mean * mean, 0.0) * n / max(n - 1, 1)
    sub = np.asarray(sub, dtype=np.float64)
    return sub.mean(axis=0), sub.var(axis=0, ddof=1)


def welch_de(x: object, group: np.ndarray, genes: object, log_base: float = 2.0) -> pd.DataFrame:
    """Per gene, the samples in ``group`` vs the others of a samples x genes log expression matrix.

    Args:
        x: [n_samples, n_genes] dense or scipy-sparse, log_{log_base}(normalised + 1) expression
            (log2(CPM+1) for bulk, ``log_base=np.e`` for scanpy's log1p).
        group: [n_samples] bool, True for the group of interest (tumour, spots in a region).
        genes: [n_genes] gene names (the index of the table).
        log_base: base of the logarithm in ``x``; values are rescaled to log2 first.

    Returns a table indexed by gene, sorted by t (largest first), with ``log2_fold_change`` = the difference
    of the two groups' mean log2(normalised + 1) (the one log fold change the ranking scores), the Welch
    t statistic and two-sided ``p_value`` (scipy's unequal-variance t-test), Benjamini-Hochberg ``fdr``, and
    ``mean_in`` / ``mean_out`` (mean log2 expression of the group / the others).
    Raises OmicsFormatError when a group has fewer than 2 samples or the shapes disagree.
    """
    group = np.asarray(group, dtype=bool).ravel()
    genes = pd.Index(genes, name="gene")
    if group.shape[0] != x.shape[0] or len(genes) != x.shape[1]:
        raise OmicsFormatError(f"welch_de: matrix {x.shape} vs {group.shape[0]} group flags and {len(genes)} genes")
    n_in, n_out = int(group.sum()), int((~group).sum())
    if n_in < 2 or n_out < 2:
        raise OmicsFormatError(f"welch_de: need >= 2 samples per group, got {n_in} vs {n_out}")
    to_log2 = 1.0 if log_base == 2.0 else float(np.log(log_base) / np.log(2.0))
    m1, v1 = _group_moments(x, group)
    m0, v0 = _group_moments(x, ~group)
    m1, m0, sd1, sd0 = m1 * to_log2, m0 * to_log2, np.sqrt(v1) * to_log2, np.sqrt(v0) * to_log2
    with np.errstate(invalid="ignore", divide="ignore"):
        t, p = stats.ttest_ind_from_stats(m1, sd1, n_in, m0, sd0, n_out, equal_var=False)
    table = pd.DataFrame(
        {"log2_fold_change": m1 - m0, "t": t, "p_value": p, "fdr": benjamini_hochberg(p), "mean_in": m1,
         "mean_out": m0},
        index=genes,
    )
    return table.sort_values("t", ascending=False, na_position="last")


def differential_expression(adata: ad.AnnData, group_key: str = "is_tumour") -> pd.DataFrame:
    """Tumour vs normal per gene by ``welch_de`` on log2(CPM+1): log2 fold change (difference of the mean
    log2(CPM+1)), Welch t, p, BH fdr, and the group means as ``mean_tumour`` / ``mean_normal``.

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
    table = welch_de(log2_cpm(counts), group, adata.var_names)
    return table.rename(columns={"mean_in": "mean_tumour", "mean_out": "mean_normal"})
