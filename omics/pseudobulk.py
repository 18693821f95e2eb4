"""Region pseudo-bulk of spatial samples: summed raw counts of a spot region, log-CPM, and label-free
principal components over the genes most variable across samples (one row per sample)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusion.errors import SpatialError


def region_counts(adata: ad.AnnData, region: np.ndarray, genes: Sequence[str]) -> np.ndarray:
    """Raw counts of `genes` summed over the spots in `region` [n_genes] (layers['counts'] when present, else X)."""
    region = np.asarray(region, dtype=bool).ravel()
    if region.shape[0] != adata.n_obs:
        raise SpatialError(f"region_counts: region has {region.shape[0]} entries for {adata.n_obs} spots")
    if not region.any():
        raise SpatialError(f"region_counts: sample {adata.uns.get('patient_id', '?')} has an empty region")
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise SpatialError(f"region_counts: sample {adata.uns.get('patient_id', '?')} lacks genes {missing[:5]}")
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    cols = adata.var_names.get_indexer(list(genes))
    sub = counts[region][:, cols]
    return np.asarray(sub.sum(axis=0) if sp.issparse(sub) else np.asarray(sub).sum(axis=0), dtype=np.float64).ravel()


def log_cpm(counts: np.ndarray) -> np.ndarray:
    """log1p(counts per million) of a samples x genes count matrix (rows normalised to their total)."""
    c = np.asarray(counts, dtype=np.float64)
    totals = c.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise SpatialError(f"log_cpm: {int((totals <= 0).sum())} pseudo-bulk row(s) have no counts")
    return np.log1p(c / totals * 1e6)


def variable_genes(logcpm: np.ndarray, n_genes: int) -> np.ndarray:
    """Indices (sorted) of the `n_genes` genes most variable across samples: scanpy's 'seurat' dispersion,
    normalised within bins of mean expression, so noisy low-count genes do not dominate (no labels)."""
    import scanpy as sc

    x = np.asarray(logcpm, dtype=np.float64)
    n = min(int(n_genes), x.shape[1])
    if n >= x.shape[1]:
        return np.arange(x.shape[1])
    table = sc.pp.highly_variable_genes(ad.AnnData(x.astype(np.float32)), n_top_genes=n, flavor="seurat",
                                        inplace=False)
    return np.sort(np.flatnonzero(table["highly_variable"].to_numpy()))


@dataclass(frozen=True)
class PseudobulkComponents:
    """Label-free PCA of z-scored pseudo-bulk log-CPM: scores [n_samples, k], the genes used, their loadings."""

    scores: np.ndarray
    genes: list[str]
    loadings: np.ndarray
    explained_variance_ratio: np.ndarray


def pseudobulk_components(counts: np.ndarray, genes: Sequence[str], n_genes: int, n_components: int,
                          seed: int = 0) -> PseudobulkComponents:
    """PCA (fitted on every sample, without labels) of the z-scored log-CPM of the `n_genes` most variable genes
    of a samples x genes pseudo-bulk count matrix; each component's sign makes its largest loading positive."""
    from sklearn.decomposition import PCA

    lc = log_cpm(counts)
    if lc.shape[0] < 3:
        raise SpatialError(f"pseudobulk_components: need >= 3 samples, got {lc.shape[0]}")
    idx = variable_genes(lc, n_genes)
    x = lc[:, idx]
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)
    k = max(1, min(int(n_components), z.shape[0] - 1, z.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(z)
    sign = np.sign(pca.components_[np.arange(k), np.abs(pca.components_).argmax(axis=1)])
    scores = pca.transform(z) * sign
    return PseudobulkComponents(scores=scores.astype(np.float32), genes=[str(genes[i]) for i in idx],
                                loadings=(pca.components_ * sign[:, None]).astype(np.float32),
                                explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64))


def components_frame(pcs: PseudobulkComponents, index: Sequence[str], prefix: str) -> pd.DataFrame:
    """Sample-indexed DataFrame of the component scores, columns f'{prefix}{i}' (i from 1)."""
    cols = [f"{prefix}{i + 1}" for i in range(pcs.scores.shape[1])]
    return pd.DataFrame(pcs.scores, index=pd.Index(list(index)), columns=cols)
