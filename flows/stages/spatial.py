"""Stage: spatial transcriptomics sample -> QC/clusters, spots linked to the histology under them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from flows.stages.spatial_pseudobulk import CELLULARITY_KEY, TUMOUR_REGION_KEY, tumour_region
from flows.store.isolate import run_isolated
from fusion.errors import SpatialError
from omics.spaceranger import SLIDE_TRANSFORM_KEY, check_slide_transform
from omics.spatial import preprocess_spatial, read_spatial, spatial_region_enrichment
from omics.spot_graph import spot_graph


def spots_in_slide_px(adata: ad.AnnData, transform: np.ndarray) -> np.ndarray:
    """Spot centres [n,2] in slide level-0 px: the 3x3 affine applied to obsm['spatial'] (Visium full-res px)."""
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    return xy @ transform[:2, :2].T + transform[:2, 2]


def resolve_slide_transform(adata: ad.AnnData, explicit: object = None, where: str = "catalog") -> np.ndarray | None:
    """The Visium -> slide affine: `explicit` (e.g. from the catalog) first, else uns['slide_transform'] of
    the sample (from slide_transform.json or the h5ad), else None (spots are then not linked)."""
    if explicit is not None:
        return check_slide_transform(explicit, where)
    value = adata.uns.get(SLIDE_TRANSFORM_KEY)
    return None if value is None else check_slide_transform(value, f"uns['{SLIDE_TRANSFORM_KEY}']")


def link_spots_to_tiles(adata: ad.AnnData, features_h5: Path, transform: np.ndarray) -> np.ndarray:
    """Per spot, the hematoxylin density (cellularity) of the slide tile under it (NaN when none), spots placed
    on the slide through the explicit 3x3 affine `transform` (Visium full-res px -> slide level-0 px)."""
    from flows.stages.pathology import load_tile_table
    from imaging.tiling import TileGrid, tile_index_at

    coords, size0, cellularity = load_tile_table(features_h5)
    grid = TileGrid(coords_level0=coords, tile_size_level0=size0, level=0, tile_size=size0, mpp=float("nan"))
    idx = tile_index_at(spots_in_slide_px(adata, transform), grid)
    out = np.full(adata.n_obs, np.nan)
    out[idx >= 0] = cellularity[idx[idx >= 0]]
    return out


def read_spatial_isolated(path: Path) -> ad.AnnData:
    """``omics.spatial.read_spatial`` in a worker process (flows.store.isolate): HDF5 and scipy's sparse code
    run on the file's bytes, and a native crash there (a segfault) becomes a SpatialError naming the file
    instead of killing the run. The readers validate the sparse index arrays first; this catches the rest."""
    return run_isolated(read_spatial, path, what=str(path), error=SpatialError, preload=("omics.spatial",))


def process_spatial_sample(patient_id: str, path: Path, features_h5: Path | None, out_path: Path,
                           cfg: dict, slide_transform: object = None) -> dict[str, Any]:
    """Read (Space Ranger folder or h5ad) + preprocess one sample; with its slide's tile features and an
    explicit Visium -> slide affine (argument, or uns['slide_transform'] / slide_transform.json), the tumour
    region (flows.stages.spatial_pseudobulk.tumour_region, stored in obs['tumour_region'], the same spots the
    pseudo-bulk features use) and the per-gene enrichment in it. Without a transform the spots are not
    linked, and `slide_link` says so."""
    adata = read_spatial_isolated(path)
    transform = resolve_slide_transform(adata, slide_transform, where=f"{patient_id}: slide_transform")
    adata.obs = adata.obs.drop(columns=[TUMOUR_REGION_KEY, CELLULARITY_KEY], errors="ignore")  # ours to write
    adata = preprocess_spatial(adata, seed=cfg["seed"])
    adata.uns["patient_id"] = patient_id
    enrichment = None
    n_linked = 0
    link = "no slide features"
    if features_h5 is not None and transform is None:
        link = (f"not linked: {path} has no slide transform (uns['{SLIDE_TRANSFORM_KEY}'] or slide_transform.json) "
                "and the catalog gives none")
    elif features_h5 is not None:
        adata.uns[SLIDE_TRANSFORM_KEY] = transform
        cell = link_spots_to_tiles(adata, features_h5, transform)
        adata.obs[CELLULARITY_KEY] = cell
        n_linked = int(np.isfinite(cell).sum())
        link = f"{n_linked}/{adata.n_obs} spots on slide tiles"
        region = tumour_region(adata)
        if region is not None:
            adata.obs[TUMOUR_REGION_KEY] = region
            n_in = int(region.sum())
            if min(n_in, adata.n_obs - n_in) >= 2:
                enrichment = spatial_region_enrichment(adata, region)
            else:
                link += f"; tumour region of {n_in}/{adata.n_obs} spots: too few on one side for the enrichment"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.h5ad")
    adata.write_h5ad(tmp)
    tmp.replace(out_path)
    return {"patient_id": patient_id, "h5ad": str(out_path), "n_spots": int(adata.n_obs), "n_linked": n_linked,
            "slide_link": link, "enrichment": enrichment}


def common_graphs(samples: list[dict[str, Any]], n_genes: int, k: int) -> list:
    """Spot graphs of every sample on one shared gene panel (log-normalised expression as node features)."""
    adatas = [ad.read_h5ad(s["h5ad"]) for s in samples]
    shared = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    if len(shared) < 10:
        raise SpatialError(f"spatial samples share only {len(shared)} genes after QC")
    var = np.mean([np.asarray((a[:, shared].X.toarray() if sp.issparse(a.X) else a[:, shared].X)).var(0)
                   for a in adatas], axis=0)
    panel = [shared[i] for i in np.argsort(-var)[:n_genes]]
    graphs = []
    for a in adatas:
        sub = a[:, panel].copy()
        graphs.append(spot_graph(sub, k=k, use_rep=None))
    return graphs


def encode_spatial_samples(samples: list[dict[str, Any]], cfg: dict) -> pd.DataFrame:
    """One label-free feature row per patient: principal components of the tumour-region pseudo-bulk
    (``spatial_tumour_pc*``, see flows.stages.spatial_pseudobulk) and, with ``spatial_graph_features``, the
    Deep Graph Infomax GNN embedding of the spot graph (``spatial_dgi_*``). ``attrs['spatial_reference']``:
    what scores a new patient's sample like the cohort's (the pseudo-bulk part)."""
    from flows.stages.spatial_pseudobulk import tumour_pseudobulk_frame

    frame = tumour_pseudobulk_frame(samples, cfg)
    if not cfg.get("spatial_graph_features", False):
        return frame
    from flows.stages.spatial_pseudobulk import REFERENCE_KEY

    reference = frame.attrs[REFERENCE_KEY]
    from omics.encoders import embed_spot_graphs, fit_spot_graph_encoder

    graphs = common_graphs(samples, cfg["spatial_panel_genes"], cfg["spatial_knn"])
    enc, _losses = fit_spot_graph_encoder(graphs, embed_dim=cfg["spatial_embed_dim"],
                                          epochs=cfg["spatial_encoder_epochs"], seed=cfg["seed"])
    emb = embed_spot_graphs(enc, graphs)
    dgi = pd.DataFrame(emb, index=[s["patient_id"] for s in samples]).add_prefix("spatial_dgi_")
    out = frame.join(dgi)
    out.attrs[REFERENCE_KEY] = reference  # the DGI encoder is not kept: a new sample gets the pseudo-bulk PCs only
    return out
