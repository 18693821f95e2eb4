"""Spot graph: symmetric k-nearest-neighbour graph over spot coordinates, as a torch_geometric Data object."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data

from fusion.errors import SpatialError


def knn_edges(coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric kNN edges (union of i->j and j->i, no self loops) on [n, d] coordinates: edge_index [2, E], lengths [E]."""
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    k_eff = min(k, n - 1)
    if k_eff < 1:
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0)
    _, neighbours = cKDTree(coords).query(coords, k=k_eff + 1)
    src = np.repeat(np.arange(n), k_eff + 1)
    dst = neighbours.ravel()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    pairs = np.unique(np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1), axis=1)
    lengths = np.linalg.norm(coords[pairs[0]] - coords[pairs[1]], axis=1)
    return pairs.astype(np.int64), lengths


def spot_graph(adata: ad.AnnData, k: int = 6, use_rep: str | None = "X_pca") -> Data:
    """Data(x = spot features float32 from obsm[use_rep] (X when None), pos = obsm['spatial'] pixels,
    edge_index = symmetric kNN on pos, edge_weight = exp(-d^2 / (2 s^2)) with s the median edge length)."""
    if "spatial" not in adata.obsm:
        raise SpatialError("spot_graph: AnnData lacks obsm['spatial'] (spot coordinates in pixels)")
    if use_rep is None:
        features = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    elif use_rep in adata.obsm:
        features = np.asarray(adata.obsm[use_rep])
    else:
        raise SpatialError(f"spot_graph: AnnData lacks obsm[{use_rep!r}]; run preprocess_spatial first or pass use_rep")
    pos = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    edge_index, lengths = knn_edges(pos, k)
    scale = float(np.median(lengths)) if lengths.size else 1.0
    weight = np.exp(-(lengths**2) / (2.0 * max(scale, 1e-12) ** 2))
    graph = Data(
        x=torch.as_tensor(features, dtype=torch.float32),
        pos=torch.as_tensor(pos, dtype=torch.float32),
        edge_index=torch.as_tensor(edge_index, dtype=torch.long),
        edge_weight=torch.as_tensor(weight, dtype=torch.float32),
        num_nodes=adata.n_obs,
    )
    if "patient_id" in adata.uns:
        graph.patient_id = str(adata.uns["patient_id"])
    return graph
