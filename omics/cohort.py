"""Cohort expression AnnData: normalisation to log2(CPM+1), one primary tumour per patient, variable genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusion.errors import OmicsFormatError

NORMALISATION = "log2_cpm_plus_1"


def _dense(x: object) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def log2_cpm(counts: np.ndarray) -> np.ndarray:
    """log2(counts per million + 1) of a samples x genes read-count matrix."""
    counts = _dense(counts)
    library = counts.sum(axis=1, keepdims=True)
    library[library == 0] = 1.0
    return np.log2(counts / library * 1e6 + 1.0)


def normalise_counts(adata: ad.AnnData) -> ad.AnnData:
    """New AnnData with raw reads in layers['counts'] and X = log2(CPM + 1) (float32); uns['normalisation'] says so."""
    counts = _dense(adata.X)
    if (counts < 0).any():
        raise OmicsFormatError("normalise_counts: X must hold non-negative read counts")
    out = adata.copy()
    out.layers["counts"] = counts.astype(np.float32)
    out.X = log2_cpm(counts).astype(np.float32)
    out.uns["normalisation"] = NORMALISATION
    return out


def tumour_samples(adata: ad.AnnData) -> ad.AnnData:
    """One primary tumour sample (type code 01) per patient: the first by barcode; obs re-indexed by patient_id."""
    for column in ("patient_id", "sample_type_code"):
        if column not in adata.obs.columns:
            raise OmicsFormatError(f"tumour_samples: obs lacks column {column!r}")
    obs = adata.obs.assign(_barcode=adata.obs_names.to_numpy())
    primary = obs.loc[obs["sample_type_code"].astype(int) == 1].sort_values("_barcode")
    chosen = primary.drop_duplicates("patient_id", keep="first")["_barcode"]
    out = adata[pd.Index(chosen)].copy()
    out.obs["barcode"] = out.obs_names.to_numpy()
    out.obs_names = out.obs["patient_id"].astype(str).to_numpy()
    out.obs_names.name = "patient_id"
    return out


def highly_variable(adata: ad.AnnData, n_top: int) -> ad.AnnData:
    """The n_top genes with the largest variance of X across samples (X assumed log2 CPM); var['variance'] added."""
    if n_top < 1:
        raise ValueError(f"highly_variable: n_top must be >= 1, got {n_top}")
    variance = _dense(adata.X).var(axis=0, ddof=1)
    order = np.argsort(-variance, kind="stable")[: min(n_top, adata.n_vars)]
    out = adata[:, np.sort(order)].copy()
    out.var["variance"] = variance[np.sort(order)]
    return out
