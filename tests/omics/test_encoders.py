import anndata as ad
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fusion.errors import SpatialError
from omics.encoders import (
    SelfNormalizingMLP,
    SpotGraphEncoder,
    embed_spot_graphs,
    embed_spots,
    fit_spot_graph_encoder,
)
from omics.spot_graph import spot_graph
from tests.omics.spatial_fixtures import planted_counts


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_snn_shape_and_mask_is_ignored():
    torch.manual_seed(0)
    model = SelfNormalizingMLP(in_dim=40, hidden=64, embed_dim=32).eval()
    x = torch.randn(7, 40)
    out = model(x)
    assert out.shape == (7, 32)
    torch.testing.assert_close(model(x, mask=torch.ones(7, dtype=torch.bool)), out)


def test_snn_is_self_normalising_at_init():
    torch.manual_seed(0)
    model = SelfNormalizingMLP(in_dim=256, hidden=512, embed_dim=32, n_layers=4).eval()
    x = torch.randn(4096, 256)
    with torch.no_grad():
        activations = model.activations(x)
    assert len(activations) == 4
    for a in activations:  # SELU fixed point (mean 0, variance 1) kept layer after layer
        assert abs(float(a.mean())) < 0.1
        assert abs(float(a.std()) - 1.0) < 0.1
    # a ReLU network with the same init would halve the second moment each layer; SELU does not
    assert abs(float(activations[-1].pow(2).mean()) - 1.0) < 0.15


def _graphs(n_genes=40):
    graphs, regions = [], []
    for seed in (0, 1):
        counts, coords, _, _, region = planted_counts(seed, size=1800.0)
        # log-normalised expression of the first genes (the planted ones included) as spot features
        x = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)[:, :n_genes]
        adata = ad.AnnData(X=x.astype(np.float32))
        adata.obsm["spatial"] = coords
        graphs.append(spot_graph(adata, k=6, use_rep=None))
        regions.append(region)
    return graphs, regions


def test_dgi_loss_falls_and_embeddings_separate_planted_region():
    graphs, regions = _graphs()
    encoder, losses = fit_spot_graph_encoder(graphs, embed_dim=16, epochs=150, seed=0, device="cpu")
    assert isinstance(encoder, SpotGraphEncoder)
    assert len(losses) == 150
    # DGI's loss starts near 2 ln 2 (chance discrimination of real vs feature-shuffled spots)
    assert np.mean(losses[:3]) > 1.3
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    train, test = embed_spots(encoder, graphs[0]), embed_spots(encoder, graphs[1])
    assert train.shape == (graphs[0].num_nodes, 16) and train.dtype == np.float32
    # a linear probe fitted on one sample's spots finds the planted region in the other sample
    probe = LogisticRegression(max_iter=2000).fit(train, regions[0])
    auc = roc_auc_score(regions[1], probe.predict_proba(test)[:, 1])
    assert auc > 0.8
    pooled = embed_spot_graphs(encoder, graphs)
    assert pooled.shape == (2, 16)
    np.testing.assert_allclose(pooled[0], train.mean(axis=0), rtol=1e-5, atol=1e-6)
    # seeded: the same training gives the same losses
    _, again = fit_spot_graph_encoder(graphs, embed_dim=16, epochs=3, seed=0, device="cpu")
    np.testing.assert_allclose(again, losses[:3], rtol=1e-5)


def test_graphs_must_share_feature_width():
    graphs, _ = _graphs()
    graphs[1].x = graphs[1].x[:, :8]
    with pytest.raises(SpatialError, match="feature widths"):
        fit_spot_graph_encoder(graphs, epochs=1)
