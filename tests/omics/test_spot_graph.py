import anndata as ad
import numpy as np
import pytest
import torch

from flows.synthetic.spatial_writer import hex_spot_grid
from fusion.errors import SpatialError
from omics.spot_graph import knn_edges, spot_graph


def _adata(coords, features=None):
    n = coords.shape[0]
    adata = ad.AnnData(X=np.ones((n, 3), dtype=np.float32))
    adata.obsm["spatial"] = np.asarray(coords, dtype=np.float64)
    adata.obsm["X_pca"] = np.arange(n * 2, dtype=np.float64).reshape(n, 2) if features is None else features
    adata.uns["patient_id"] = "TCGA-FX-0001"
    return adata


def test_line_by_hand():
    # points at 0, 1, 3, 7 with k=1: nearest of 0 is 1, of 1 is 0, of 3 is 1, of 7 is 3
    # -> undirected edges {0-1, 1-3, 3-7}: degrees 1, 2, 2, 1
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    graph = spot_graph(_adata(coords), k=1)
    edges = {tuple(e) for e in graph.edge_index.T.tolist()}
    assert edges == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}
    degree = torch.bincount(graph.edge_index[0], minlength=4)
    assert degree.tolist() == [1, 2, 2, 1]
    # weights: Gaussian of length with s = median edge length (2): exp(-1/8), exp(-4/8), exp(-16/8)
    lengths = {(0, 1): 1.0, (1, 2): 2.0, (2, 3): 4.0}
    for (i, j), w in zip(graph.edge_index.T.tolist(), graph.edge_weight.tolist()):
        d = lengths[(min(i, j), max(i, j))]
        assert w == pytest.approx(np.exp(-(d**2) / 8.0), rel=1e-6)
    assert graph.x.dtype == torch.float32 and graph.x.shape == (4, 2)
    assert graph.pos.shape == (4, 2)
    assert graph.patient_id == "TCGA-FX-0001"


def test_hex_grid_symmetric_with_six_lattice_neighbours():
    coords, _, _ = hex_spot_grid((0, 0, 1500, 1500), 100.0)
    graph = spot_graph(_adata(coords), k=6)
    ei = graph.edge_index.numpy()
    n = coords.shape[0]
    adjacency = np.zeros((n, n), dtype=bool)
    adjacency[ei[0], ei[1]] = True
    assert (adjacency == adjacency.T).all()
    assert not adjacency.diagonal().any()
    assert ei.shape[1] == adjacency.sum()  # no duplicate edges
    degree = adjacency.sum(axis=1)
    assert degree.min() >= 6
    # a spot far from the border (no incomplete-lattice spot within 3 pitches, so no border spot reaches
    # it through a longer kNN edge) is linked to exactly its six lattice neighbours
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    lattice = np.isclose(d, 100.0)
    border = lattice.sum(axis=1) < 6
    deep = ~((d < 300.5) & border[None, :]).any(axis=1)
    assert deep.sum() > 20
    np.testing.assert_array_equal(adjacency[deep], lattice[deep])
    assert (degree[deep] == 6).all()


def test_knn_edges_tiny_and_errors():
    ei, lengths = knn_edges(np.zeros((1, 2)), 6)
    assert ei.shape == (2, 0) and lengths.shape == (0,)
    adata = _adata(np.random.default_rng(0).uniform(size=(5, 2)))
    with pytest.raises(SpatialError, match="X_umap"):
        spot_graph(adata, use_rep="X_umap")
    assert spot_graph(adata, use_rep=None).x.shape == (5, 3)
    del adata.obsm["spatial"]
    with pytest.raises(SpatialError, match="spatial"):
        spot_graph(adata)
