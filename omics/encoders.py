"""Omics encoders: a self-normalising MLP for expression profiles and a GCN over the spot graph trained with
Deep Graph Infomax (label-free), pooled to one embedding per spatial sample."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import DeepGraphInfomax, GCNConv

from fusion.device import autocast
from fusion.device import resolve_device as default_device
from fusion.errors import SpatialError


class SelfNormalizingMLP(nn.Module):
    """Self-normalising network (Klambauer et al. 2017): Linear -> SELU -> AlphaDropout blocks, LeCun normal init.

    forward(x [B, in_dim], mask=None) -> [B, embed_dim]; mask is accepted and ignored so that the expression
    encoder shares the encoder(x, mask) contract of the slide MIL encoder.
    """

    def __init__(self, in_dim: int, hidden: int = 64, embed_dim: int = 32, dropout: float = 0.1, n_layers: int = 2):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers):
            blocks.append(nn.Sequential(nn.Linear(width, hidden), nn.SELU(), nn.AlphaDropout(dropout)))
            width = hidden
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width, embed_dim)
        self.in_dim, self.embed_dim = in_dim, embed_dim
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=1.0 / math.sqrt(module.in_features))
                nn.init.zeros_(module.bias)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-SELU activations of each hidden block (mean ~0, std ~1 on standardised input at init)."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class SpotGraphEncoder(nn.Module):
    """Two GCN layers with PReLU over the spot graph: forward(x, edge_index, edge_weight=None) -> [n_spots, embed_dim]."""

    def __init__(self, in_dim: int, hidden: int = 64, embed_dim: int = 16):
        super().__init__()
        self.conv1 = GCNConv(in_dim, hidden)
        self.act1 = nn.PReLU(hidden)
        self.conv2 = GCNConv(hidden, embed_dim)
        self.act2 = nn.PReLU(embed_dim)
        self.in_dim, self.embed_dim = in_dim, embed_dim

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act1(self.conv1(x, edge_index, edge_weight))
        return self.act2(self.conv2(h, edge_index, edge_weight))


def _summary(z: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.sigmoid(z.mean(dim=0))


def _check_graphs(graphs: Sequence[Data]) -> int:
    if not graphs:
        raise SpatialError("spot graph encoder: no graphs given")
    dims = {int(g.x.shape[1]) for g in graphs}
    if len(dims) != 1:
        raise SpatialError(f"spot graph encoder: graphs have different feature widths {sorted(dims)}")
    return dims.pop()


def fit_spot_graph_encoder(
    graphs: Sequence[Data],
    embed_dim: int = 16,
    epochs: int = 50,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    hidden: int = 64,
    lr: float = 1e-3,
) -> tuple[SpotGraphEncoder, list[float]]:
    """Train a SpotGraphEncoder with Deep Graph Infomax (no labels); returns (encoder in eval mode, mean loss per epoch).

    Every graph must share the feature width (e.g. PCA fitted on the whole cohort). The corruption shuffles
    spot features within a graph. CUDA runs under the mixed-precision policy (``fusion.device.autocast``);
    CPU in float32.
    """
    in_dim = _check_graphs(graphs)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dev = default_device(device)
    encoder = SpotGraphEncoder(in_dim, hidden=hidden, embed_dim=embed_dim)

    def corruption(x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None):
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return x[perm], edge_index, edge_weight

    model = DeepGraphInfomax(hidden_channels=embed_dim, encoder=encoder, summary=_summary, corruption=corruption).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        order = torch.randperm(len(graphs), generator=generator).tolist()
        for i in order:
            graph = graphs[i]
            x = graph.x.to(dev)
            edge_index = graph.edge_index.to(dev)
            edge_weight = graph.edge_weight.to(dev) if getattr(graph, "edge_weight", None) is not None else None
            optimiser.zero_grad(set_to_none=True)
            with autocast(dev):
                pos_z, neg_z, summary = model(x, edge_index, edge_weight)
            loss = model.loss(pos_z.float(), neg_z.float(), summary.float())
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        losses.append(total / len(graphs))
    encoder.eval()
    return encoder, losses


@torch.no_grad()
def embed_spots(encoder: SpotGraphEncoder, graph: Data) -> np.ndarray:
    """Per-spot embeddings [n_spots, embed_dim] (float32) of one spot graph."""
    encoder.eval()
    dev = next(encoder.parameters()).device
    edge_weight = graph.edge_weight.to(dev) if getattr(graph, "edge_weight", None) is not None else None
    z = encoder(graph.x.to(dev), graph.edge_index.to(dev), edge_weight)
    return z.float().cpu().numpy()


def embed_spot_graphs(encoder: SpotGraphEncoder, graphs: Sequence[Data]) -> np.ndarray:
    """One embedding per spatial sample [n_graphs, embed_dim]: the mean of its spot embeddings."""
    _check_graphs(graphs)
    return np.stack([embed_spots(encoder, g).mean(axis=0) for g in graphs]).astype(np.float32)
