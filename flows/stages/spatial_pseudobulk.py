"""Spatial patient features: each sample's tumour region found without labels, its pseudo-bulk, and the
principal components of the pseudo-bulk over the cohort's most variable genes.

The tumour region of a sample linked to its slide is the set of expression clusters over high-cellularity
tissue (`tumour_region`, see omics.spatial.tumour_clusters_by_cellularity): the one definition behind both
the `spatial_tumour_region` evidence and these features, stored in obs['tumour_region'] of the processed
sample. A sample without the link borrows the cohort's tumour signature (tumour-vs-rest log fold changes
averaged over the linked samples) to score its spots; with no linked sample at all, the pseudo-bulk covers
every spot.

The frame of features carries in ``attrs["spatial_reference"]`` (kept in the parquet file) what a new patient's
sample needs to get the same features without the cohort: the cohort's shared genes, the z-scoring and
principal axes of the pseudo-bulk, and the tumour signature's genes (``pseudobulk_reference``,
``reference_features``).
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusion.errors import SpatialError
from omics.pseudobulk import PseudobulkComponents, components_frame, log_cpm, pseudobulk_components, region_counts

TUMOUR_REGION_KEY = "tumour_region"  # obs column of the processed sample: its tumour spots (bool)
CELLULARITY_KEY = "tile_hematoxylin"  # obs column: hematoxylin density of the slide tile under each spot (NaN: none)
MIN_LINKED_SPOTS = 10  # fewer spots on slide tiles than this: no histology region
MIN_COHORT_SAMPLES = 3  # the pseudo-bulk components are fitted across samples: fewer than this, no features
SIGNATURE_GENES = 20  # genes up and down in the tumour region used to score the spots of an unlinked sample
FEATURE_PREFIX = "spatial_tumour_pc"
REFERENCE_KEY = "spatial_reference"  # attrs key of the features frame: the cohort reference (pseudobulk_reference)


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
    from omics.spatial import tumour_clusters_by_cellularity  # scanpy: imported when a sample is summarised

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
    from omics.spatial import tumour_clusters_by_cellularity

    return tumour_clusters_by_cellularity(score, adata.obs["leiden"].to_numpy())


def cohort_signature(adatas: list[ad.AnnData], genes: list[str]) -> pd.Series | None:
    """The cohort's tumour signature (``tumour_signature`` over the samples' histology regions), None when no
    sample has a histology region leaving spots outside it."""
    found = [histology_region(a) for a in adatas]
    if any(r is not None and not r.all() for r in found):
        return tumour_signature(adatas, found, genes)
    return None


def sample_region(adata: ad.AnnData, signature: pd.Series | None) -> tuple[np.ndarray, str]:
    """One sample's (tumour spot mask, how it was found: 'histology', 'signature' or 'all spots'), given the
    cohort's signature (``cohort_signature``; None: no signature)."""
    region = histology_region(adata)
    if region is not None:
        return region, "histology"
    if signature is not None and "leiden" in adata.obs.columns:
        return signature_region(adata, signature), "signature"
    return np.ones(adata.n_obs, dtype=bool), "all spots"


def tumour_regions(adatas: list[ad.AnnData], genes: list[str]) -> list[tuple[np.ndarray, str]]:
    """Per sample, (tumour spot mask, how it was found: 'histology', 'signature' or 'all spots')."""
    signature = cohort_signature(adatas, genes)
    return [sample_region(a, signature) for a in adatas]


def pseudobulk_reference(genes: list[str], counts: np.ndarray, pcs: PseudobulkComponents,
                         signature: pd.Series | None, n_genes: int = SIGNATURE_GENES) -> dict[str, Any]:
    """What scores a new sample like the cohort's (JSON values): ``genes`` (the cohort's shared genes, whose
    counts the log-CPM is taken over), ``pc_genes``, their log-CPM ``mean`` and ``scale`` over the cohort's
    samples, the z-scores' ``centre``, the PCA ``loadings`` [k, g] (signs as in the features), the feature
    ``prefix`` and the tumour signature's ``signature`` {gene: tumour-minus-rest} (its ``n_genes`` most up and
    down genes; None without one)."""
    idx = pd.Index(genes).get_indexer(pcs.genes)
    x = log_cpm(counts)[:, idx]
    sd = x.std(axis=0)
    scale = np.where(sd > 1e-12, sd, 1.0)
    z = (x - x.mean(axis=0)) / scale
    sig = None
    if signature is not None:
        order = signature.sort_values()
        sig = {str(g): float(v) for g, v in pd.concat([order.iloc[:n_genes], order.iloc[-n_genes:]]).items()}
    return {"genes": list(map(str, genes)), "pc_genes": list(pcs.genes), "mean": x.mean(axis=0).tolist(),
            "scale": scale.tolist(), "centre": z.mean(axis=0).tolist(), "loadings": pcs.loadings.astype(float).tolist(),
            "prefix": FEATURE_PREFIX, "signature": sig}


def reference_features(adata: ad.AnnData, reference: dict[str, Any]) -> tuple[pd.Series, np.ndarray, str]:
    """A processed sample's tumour-region pseudo-bulk features as the cohort's (columns spatial_tumour_pc1..k)
    from the cohort ``reference`` alone, its tumour region (bool [n_spots]) and how that was found
    (``sample_region``). SpatialError when the sample lacks genes of the cohort's panel or its region is empty."""
    sig = reference.get("signature")
    region, how = sample_region(adata, pd.Series(sig) if sig else None)
    counts = region_counts(adata, region, reference["genes"])
    x = log_cpm(counts[None, :])[0, pd.Index(reference["genes"]).get_indexer(reference["pc_genes"])]
    z = (x - np.asarray(reference["mean"])) / np.asarray(reference["scale"])
    scores = (z - np.asarray(reference["centre"])) @ np.asarray(reference["loadings"]).T
    return pd.Series(scores, index=[f"{reference['prefix']}{i + 1}" for i in range(scores.size)]), region, how


def tumour_pseudobulk_frame(samples: list[dict[str, Any]], cfg: dict) -> pd.DataFrame:
    """Patient-indexed frame of the tumour-region pseudo-bulk's principal components (columns
    spatial_tumour_pc1..k, k = cfg['spatial_pseudobulk_pcs']) over the cfg['spatial_pseudobulk_genes'] genes
    most variable across samples; fitted on every sample without labels. ``attrs[REFERENCE_KEY]``: the
    reference that scores a new sample the same way (``pseudobulk_reference``)."""
    if len(samples) < MIN_COHORT_SAMPLES:
        raise SpatialError(f"spatial pseudo-bulk: need >= {MIN_COHORT_SAMPLES} spatial samples, got {len(samples)}")
    adatas = [ad.read_h5ad(s["h5ad"]) for s in samples]
    genes = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    if len(genes) < 10:
        raise SpatialError(f"spatial samples share only {len(genes)} genes after QC")
    signature = cohort_signature(adatas, genes)
    counts = np.stack([region_counts(a, sample_region(a, signature)[0], genes) for a in adatas])
    pcs = pseudobulk_components(counts, genes, n_genes=cfg.get("spatial_pseudobulk_genes", 100),
                                n_components=cfg.get("spatial_pseudobulk_pcs", 2), seed=cfg.get("seed", 0))
    frame = components_frame(pcs, [s["patient_id"] for s in samples], FEATURE_PREFIX)
    frame.attrs[REFERENCE_KEY] = pseudobulk_reference(genes, counts, pcs, signature)
    return frame
