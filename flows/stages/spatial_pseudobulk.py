"""Spatial patient features: each sample's tumour region found without labels, its pseudo-bulk, and the
principal components of the pseudo-bulk over the cohort's most variable genes.

The tumour region of a sample linked to its slide is the set of expression clusters over high-cellularity
tissue (`tumour_region`, see omics.spatial.tumour_clusters_by_cellularity): the one definition behind both
the `spatial_tumour_region` evidence and these features, stored in obs['tumour_region'] of the processed
sample. A sample without the link borrows the cohort's tumour signature (tumour-vs-rest log fold changes
averaged over the linked samples) to score its spots; with no linked sample at all, the pseudo-bulk covers
every spot.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusion.errors import SpatialError
from omics.pseudobulk import components_frame, pseudobulk_components, region_counts
from omics.spatial import tumour_clusters_by_cellularity

TUMOUR_REGION_KEY = "tumour_region"  # obs column of the processed sample: its tumour spots (bool)
CELLULARITY_KEY = "tile_hematoxylin"  # obs column: hematoxylin density of the slide tile under each spot (NaN: none)
MIN_LINKED_SPOTS = 10  # fewer spots on slide tiles than this: no histology region
MIN_COHORT_SAMPLES = 3  # the pseudo-bulk components are fitted across samples: fewer than this, no features
SIGNATURE_GENES = 20  # genes up and down in the tumour region used to score the spots of an unlinked sample
FEATURE_PREFIX = "spatial_tumour_pc"


def _dense(x: object) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def tumour_region(adata: ad.AnnData) -> np.ndarray | None:
    """The sample's tumour spots from its slide link: the whole expression clusters (obs['leiden']) over
    high-cellularity tissue (obs['tile_hematoxylin']), see omics.spatial.tumour_clusters_by_cellularity.
    None when fewer than MIN_LINKED_SPOTS spots lie on slide tiles or no spot qualifies."""
    if CELLULARITY_KEY not in adata.obs.columns or "leiden" not in adata.obs.columns:
        return None
    cell = adata.obs[CELLULARITY_KEY].to_numpy(dtype=np.float64)
    if np.isfinite(cell).sum() < MIN_LINKED_SPOTS:
        return None
    region = tumour_clusters_by_cellularity(cell, adata.obs["leiden"].to_numpy())
    return region if region.any() else None


def histology_region(adata: ad.AnnData) -> np.ndarray | None:
    """The tumour region stored with a processed sample (obs['tumour_region'], written by the spatial stage
    from `tumour_region`), else `tumour_region` itself; None when the sample is not linked to its slide."""
    if TUMOUR_REGION_KEY in adata.obs.columns:
        region = adata.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool)
        return region if region.any() else None
    return tumour_region(adata)


def tumour_signature(adatas: list[ad.AnnData], regions: list[np.ndarray | None], genes: list[str]) -> pd.Series:
    """Per gene, the tumour-minus-rest difference of mean log-normalised expression (X), averaged over the
    samples with a region that leaves spots on both sides."""
    diffs = []
    for a, region in zip(adatas, regions):
        if region is None or region.all() or not region.any():
            continue
        x = _dense(a[:, genes].X)
        diffs.append(x[region].mean(axis=0) - x[~region].mean(axis=0))
    if not diffs:
        raise SpatialError("tumour_signature: no sample has a tumour region with spots inside and outside")
    return pd.Series(np.mean(diffs, axis=0), index=genes)


def signature_region(adata: ad.AnnData, signature: pd.Series, n_genes: int = SIGNATURE_GENES) -> np.ndarray:
    """Tumour spots of an unlinked sample: the clusters whose spots score high on the signature (mean X of the
    `n_genes` most tumour-up genes minus that of the `n_genes` most tumour-down genes)."""
    order = signature.sort_values()
    up, down = list(order.index[-n_genes:]), list(order.index[:n_genes])
    score = _dense(adata[:, up].X).mean(axis=1) - _dense(adata[:, down].X).mean(axis=1)
    return tumour_clusters_by_cellularity(score, adata.obs["leiden"].to_numpy())


def tumour_regions(adatas: list[ad.AnnData], genes: list[str]) -> list[tuple[np.ndarray, str]]:
    """Per sample, (tumour spot mask, how it was found: 'histology', 'signature' or 'all spots')."""
    found = [histology_region(a) for a in adatas]
    signature = None
    if any(r is not None and not r.all() for r in found):
        signature = tumour_signature(adatas, found, genes)
    out = []
    for a, region in zip(adatas, found):
        if region is not None:
            out.append((region, "histology"))
        elif signature is not None and "leiden" in a.obs.columns:
            out.append((signature_region(a, signature), "signature"))
        else:
            out.append((np.ones(a.n_obs, dtype=bool), "all spots"))
    return out


def tumour_pseudobulk_frame(samples: list[dict[str, Any]], cfg: dict) -> pd.DataFrame:
    """Patient-indexed frame of the tumour-region pseudo-bulk's principal components (columns
    spatial_tumour_pc1..k, k = cfg['spatial_pseudobulk_pcs']) over the cfg['spatial_pseudobulk_genes'] genes
    most variable across samples; fitted on every sample without labels."""
    if len(samples) < MIN_COHORT_SAMPLES:
        raise SpatialError(f"spatial pseudo-bulk: need >= {MIN_COHORT_SAMPLES} spatial samples, got {len(samples)}")
    adatas = [ad.read_h5ad(s["h5ad"]) for s in samples]
    genes = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    if len(genes) < 10:
        raise SpatialError(f"spatial samples share only {len(genes)} genes after QC")
    regions = tumour_regions(adatas, genes)
    counts = np.stack([region_counts(a, region, genes) for a, (region, _how) in zip(adatas, regions)])
    pcs = pseudobulk_components(counts, genes, n_genes=cfg.get("spatial_pseudobulk_genes", 100),
                                n_components=cfg.get("spatial_pseudobulk_pcs", 2), seed=cfg.get("seed", 0))
    return components_frame(pcs, [s["patient_id"] for s in samples], FEATURE_PREFIX)
