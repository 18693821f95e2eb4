"""Spatial transcriptomics (Space Ranger folders, Visium-like h5ad): validated reading, scanpy
preprocessing/clustering, region enrichment.

Spots carry obsm['spatial'] as (x, y) full-resolution pixels of the Visium image itself; they reach a
diagnostic slide's level-0 pixels only through an explicit 3x3 affine (uns['slide_transform'], see
omics.spaceranger), applied by the flows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from fusion.errors import SpatialError
from omics.de import welch_de
from omics.spaceranger import (SLIDE_TRANSFORM_KEY, check_slide_transform, compressed_index_problems,
                               is_spaceranger_folder, read_spaceranger)


def _fail(path: object, slot: str, expected: str) -> SpatialError:
    return SpatialError(f"{path}: slot {slot} {expected}")


def _integer_valued(x: object) -> bool:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return bool(np.isfinite(data).all() and (data >= 0).all() and np.array_equal(data, np.round(data)))


def read_visium_h5ad(path: str | Path, *, library_id: str | None = None, in_tissue_only: bool = True) -> ad.AnnData:
    """Read a Visium-like h5ad and check its slots; X = raw spot counts (float32 CSR), uns['library_id'] set.

    Checks: counts (X, or layers['counts'] when X is normalised), obsm['spatial'] [n, 2] finite full-res pixels,
    uns['spatial'][library_id]['images']['hires'] and ['scalefactors'] (tissue_hires_scalef,
    spot_diameter_fullres > 0), obs['in_tissue'] in {0, 1} when present (spots outside tissue are dropped
    when in_tissue_only).
    """
    path = Path(path)
    adata = _read_h5ad(path)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise _fail(path, "X", f"must be a non-empty spots x genes matrix, got {adata.shape}")
    adata = _with_raw_counts(adata, path)
    adata.obsm["spatial"] = _spot_coordinates(adata, path)
    library_id = _library_id(adata.uns.get("spatial"), library_id, path)
    _check_library(adata.uns["spatial"][library_id], library_id, path)
    adata = _in_tissue_spots(adata, path, in_tissue_only)
    adata.uns["library_id"] = library_id
    if SLIDE_TRANSFORM_KEY in adata.uns:
        adata.uns[SLIDE_TRANSFORM_KEY] = check_slide_transform(adata.uns[SLIDE_TRANSFORM_KEY],
                                                               f"{path}: uns['{SLIDE_TRANSFORM_KEY}']")
    return adata


def _read_h5ad(path: Path) -> ad.AnnData:
    """The h5ad file as AnnData; SpatialError when it is absent or unreadable."""
    if not path.is_file():
        raise SpatialError(f"{path}: spatial h5ad file not found")
    check_h5ad_sparse(path)  # corrupt sparse index arrays crash scipy's native code, so look before reading
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types on corrupt files
        raise SpatialError(f"{path}: cannot read as h5ad: {exc}") from exc


def check_h5ad_sparse(path: Path) -> None:
    """SpatialError naming the file and group unless every CSR/CSC matrix stored in the h5ad (X, layers,
    raw, obsm, ...) has consistent index arrays (omics.spaceranger.compressed_index_problems)."""
    import h5py

    groups: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Group) and obj.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
            groups.append(name)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
            for name in groups:
                g = f[name]
                n_rows, n_cols = (int(v) for v in g.attrs["shape"])
                csr = g.attrs["encoding-type"] == "csr_matrix"
                problems = compressed_index_problems(
                    g["indptr"][()], g["indices"][()], int(g["data"].shape[0]), n_rows if csr else n_cols,
                    n_cols if csr else n_rows, prefix=f"{name}/", major="rows" if csr else "columns",
                    minor="column" if csr else "row")
                if problems:
                    raise SpatialError(f"{path}: corrupt sparse matrix {name!r}: " + "; ".join(problems))
    except SpatialError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError ... on damaged files
        raise SpatialError(f"{path}: cannot read as h5ad: {type(exc).__name__}: {exc}") from exc


def _spot_coordinates(adata: ad.AnnData, path: Path) -> np.ndarray:
    """obsm['spatial'] as finite float64 [n_spots, 2] (x, y) full-resolution pixels."""
    if "spatial" not in adata.obsm:
        raise _fail(path, "obsm['spatial']", "is missing; expected [n_spots, 2] (x, y) full-resolution pixels")
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if coords.shape != (adata.n_obs, 2) or not np.isfinite(coords).all():
        raise _fail(path, "obsm['spatial']", f"must be finite [{adata.n_obs}, 2] pixel coordinates, got {coords.shape}")
    return coords


def _library_id(spatial: object, library_id: str | None, path: Path) -> str:
    """The library of uns['spatial'] to use: ``library_id``, else the only one there."""
    if not isinstance(spatial, dict) or not spatial:
        raise _fail(path, "uns['spatial']", "is missing; expected {library_id: {'images', 'scalefactors'}}")
    if library_id is None:
        if len(spatial) != 1:
            raise _fail(path, "uns['spatial']", f"holds libraries {list(spatial)}; pass library_id to choose one")
        library_id = next(iter(spatial))
    if library_id not in spatial:
        raise _fail(path, "uns['spatial']", f"has no library {library_id!r}; found {list(spatial)}")
    return library_id


def _check_library(library: object, library_id: str, path: Path) -> None:
    """A library holds images['hires'] ([H, W, 3|4]) and positive scalefactors tissue_hires_scalef and
    spot_diameter_fullres."""
    slot = f"uns['spatial'][{library_id!r}]"
    images = library.get("images") if isinstance(library, dict) else None
    if not isinstance(images, dict) or "hires" not in images:
        raise _fail(path, f"{slot}['images']['hires']", "is missing; expected an [H, W, 3] image")
    hires = np.asarray(images["hires"])
    if hires.ndim != 3 or hires.shape[2] not in (3, 4):
        raise _fail(path, f"{slot}['images']['hires']", f"must be [H, W, 3|4], got {hires.shape}")
    scalefactors = library.get("scalefactors")
    if not isinstance(scalefactors, dict):
        raise _fail(path, f"{slot}['scalefactors']", "is missing")
    for key in ("tissue_hires_scalef", "spot_diameter_fullres"):
        value = scalefactors.get(key)
        if value is None or not np.isfinite(float(value)) or float(value) <= 0:
            raise _fail(path, f"{slot}['scalefactors'][{key!r}]", f"must be a positive number, got {value!r}")


def _in_tissue_spots(adata: ad.AnnData, path: Path, in_tissue_only: bool) -> ad.AnnData:
    """Check obs['in_tissue'] (0/1) when present; with ``in_tissue_only`` a copy of the spots inside the tissue."""
    if "in_tissue" not in adata.obs.columns:
        return adata
    in_tissue = pd.to_numeric(adata.obs["in_tissue"], errors="coerce")
    if not in_tissue.isin((0, 1)).all():
        raise _fail(path, "obs['in_tissue']", "must be 0 or 1 for every spot")
    if in_tissue_only:
        adata = adata[in_tissue.to_numpy() == 1].copy()
        if adata.n_obs == 0:
            raise _fail(path, "obs['in_tissue']", "marks no spot as inside the tissue")
    return adata


def _with_raw_counts(adata: ad.AnnData, path: Path) -> ad.AnnData:
    """X = the raw integer counts, found in X, layers['counts'] or .raw (in that order); SpatialError naming
    the file and what each slot held otherwise."""
    found = []
    for slot, matrix in (("X", adata.X), ("layers['counts']", adata.layers.get("counts"))):
        if matrix is None:
            continue
        if _integer_valued(matrix):
            adata.X = sp.csr_matrix(matrix, dtype=np.float32)
            adata.layers.pop("counts", None)
            return adata
        found.append(f"{slot} is not integer (max {_max(matrix):.3g})")
    if adata.raw is not None:
        if _integer_valued(adata.raw.X):
            out = ad.AnnData(X=sp.csr_matrix(adata.raw.X, dtype=np.float32), obs=adata.obs, var=adata.raw.var,
                             obsm=dict(adata.obsm), uns=dict(adata.uns))
            return out
        found.append(f".raw.X is not integer (max {_max(adata.raw.X):.3g})")
    raise _fail(path, "X, layers['counts'] or .raw", "must hold non-negative integer spot counts; "
                + ("; ".join(found) or "none present") + " (normalised data cannot be re-counted)")


def _max(x: object) -> float:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return float(data.max()) if data.size else 0.0


def read_spatial(path: str | Path, *, in_tissue_only: bool = True) -> ad.AnnData:
    """One spatial sample from a Space Ranger output folder (or its outs/) or a Visium-like h5ad file;
    X holds raw integer counts, obsm['spatial'] full-resolution Visium image px (x, y)."""
    path = Path(path)
    if path.is_dir():
        if not is_spaceranger_folder(path):
            raise SpatialError(f"{path}: folder is not a Space Ranger output (needs spatial/ with "
                               "tissue_positions*, scalefactors_json.json and a *feature_bc_matrix.h5)")
        return read_spaceranger(path, in_tissue_only=in_tissue_only)
    if path.suffix == ".h5ad" or not path.exists():
        return read_visium_h5ad(path, in_tissue_only=in_tissue_only)
    raise SpatialError(f"{path}: not a spatial sample; expected a Space Ranger folder or an .h5ad file")


def cluster_spots(
    adata: ad.AnnData,
    *,
    seed: int = 0,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    connectivity: str = "gauss",
) -> ad.AnnData:
    """On log-normalised X, in place: var['highly_variable'], obsm['X_pca'], kNN graph and obs['leiden'] (seeded).

    connectivity 'gauss' (exact sklearn kNN, adaptive Gaussian kernel) avoids the umap/numba JIT start-up
    (~20 s); 'umap' gives scanpy's default fuzzy-simplicial weights.
    """
    n_hvg = min(n_top_genes, adata.n_vars)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_hvg, flavor="seurat")
    n_comps = max(2, min(n_pcs, int(adata.var["highly_variable"].sum()) - 1, adata.n_obs - 1))
    sc.pp.pca(adata, n_comps=n_comps, mask_var="highly_variable", random_state=seed)
    sc.pp.neighbors(
        adata,
        n_neighbors=n_neighbors,
        use_rep="X_pca",
        random_state=seed,
        method=connectivity,
        transformer="sklearn" if connectivity == "gauss" else None,
    )
    sc.tl.leiden(
        adata, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed
    )
    return adata


def preprocess_spatial(
    adata: ad.AnnData,
    seed: int = 0,
    *,
    min_counts: int | None = None,
    min_spots_per_gene: int = 3,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    connectivity: str = "gauss",
) -> ad.AnnData:
    """New AnnData: QC metrics, low-count spots and rare genes dropped, X = log1p(counts per 10k), clusters.

    min_counts defaults to 10% of the median spot total. Raw counts stay in layers['counts'];
    obs['leiden'] holds the seeded Leiden clusters (see cluster_spots).
    """
    out = adata.copy()
    sc.pp.calculate_qc_metrics(out, percent_top=None, log1p=False, inplace=True)
    totals = out.obs["total_counts"].to_numpy()
    threshold = 0.1 * float(np.median(totals)) if min_counts is None else float(min_counts)
    out = out[totals >= threshold].copy()
    if out.n_obs < 3:
        raise SpatialError(f"preprocess_spatial: only {out.n_obs} spots have >= {threshold:g} counts")
    sc.pp.filter_genes(out, min_cells=min_spots_per_gene)
    out.layers["counts"] = out.X.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    out.uns["min_counts"] = threshold
    return cluster_spots(
        out,
        seed=seed,
        n_top_genes=n_top_genes,
        n_pcs=n_pcs,
        n_neighbors=n_neighbors,
        resolution=resolution,
        connectivity=connectivity,
    )


def spatial_region_enrichment(adata: ad.AnnData, region: np.ndarray) -> pd.DataFrame:
    """Per gene, spots in region vs outside on log1p-normalised X: the one Welch test of FusionRx
    (``omics.de.welch_de``): log2 fold change (difference of mean log2(normalised + 1), as for bulk tumour vs
    normal), Welch t, p, BH fdr; mean_in / mean_out are mean log2 values. Sorted by t, largest first.
    """
    region = np.asarray(region, dtype=bool).ravel()
    if region.shape[0] != adata.n_obs:
        raise SpatialError(f"spatial_region_enrichment: region has {region.shape[0]} entries for {adata.n_obs} spots")
    n_in, n_out = int(region.sum()), int((~region).sum())
    if n_in < 2 or n_out < 2:
        raise SpatialError(f"spatial_region_enrichment: need >= 2 spots inside and outside, got {n_in} and {n_out}")
    x = adata.X.tocsr() if sp.issparse(adata.X) else np.asarray(adata.X)
    return welch_de(x, region, adata.var_names, log_base=np.e)


def region_from_clusters(adata: ad.AnnData, clusters: Iterable[str], key: str = "leiden") -> np.ndarray:
    """Boolean spot mask: True for spots whose obs[key] cluster is one of clusters."""
    if key not in adata.obs.columns:
        raise SpatialError(f"region_from_clusters: obs lacks column {key!r}")
    return adata.obs[key].astype(str).isin([str(c) for c in clusters]).to_numpy()


def two_means_threshold(values: np.ndarray, n_iter: int = 50) -> float:
    """1-D two-means (Otsu-like) cut between low and high values: the midpoint of the two group means at
    convergence, started from the midpoint of the 25th and 75th percentiles (finite values only)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise SpatialError(f"two_means_threshold: need >= 2 finite values, got {v.size}")
    t = 0.5 * (np.quantile(v, 0.25) + np.quantile(v, 0.75))
    for _ in range(n_iter):
        lo, hi = v[v < t], v[v >= t]
        if lo.size == 0 or hi.size == 0:
            break
        new = 0.5 * (lo.mean() + hi.mean())
        if np.isclose(new, t):
            break
        t = new
    return float(t)


def tumour_clusters_by_cellularity(cellularity: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Boolean spot mask of the tumour region: whole expression clusters (e.g. obs['leiden']) whose mean
    cellularity of the tissue under their spots (NaN where unlinked) reaches the two-means cut between low-
    and high-cellularity spots. When no cluster (or every cluster) reaches it, the spots at or above the cut."""
    cell = np.asarray(cellularity, dtype=np.float64).ravel()
    labels = np.asarray(clusters).astype(str).ravel()
    if cell.shape != labels.shape:
        raise SpatialError(f"tumour_clusters_by_cellularity: {cell.size} cellularity values for {labels.size} spots")
    cut = two_means_threshold(cell)
    finite = np.isfinite(cell)
    means = {c: float(np.mean(cell[(labels == c) & finite])) for c in np.unique(labels[finite])}
    tumour = [c for c, m in means.items() if m >= cut]
    if not tumour or len(tumour) == len(np.unique(labels)):
        return finite & (np.where(finite, cell, -np.inf) >= cut)
    return np.isin(labels, tumour)
