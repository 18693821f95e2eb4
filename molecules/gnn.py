"""Molecule GNN: GINE message passing over atom graphs, sum + mean pooling, regression head.

Targets are standardised inside ``fit_molecule_gnn`` (mean / std kept as model buffers), so
``predict`` returns values in the units of ``y``. CUDA (float32) when available,
CPU in float32 otherwise; the same code path. Seeded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import KFold
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool

from fusion.device import resolve_device as default_device
from fusion.errors import MoleculeError

__all__ = ["MoleculeGNN", "default_device", "fit_molecule_gnn", "predict", "embed", "cross_validate_gnn"]


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float32 on CUDA too: on an H200 (bench/gpu_check.py) bfloat16 autocast ran this small GNN at 0.74x the
    float32 throughput and 7% off the float32 output, so mixed precision buys nothing here."""
    return contextlib.nullcontext()


class MoleculeGNN(nn.Module):
    """GINE layers (edge-aware GIN) with residuals -> [sum pool, mean pool] -> MLP -> one value per molecule."""

    def __init__(self, node_dim: int, edge_dim: int, hidden: int = 64, layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.node_in = nn.Linear(node_dim, hidden)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.convs.append(GINEConv(mlp, train_eps=True, edge_dim=edge_dim))
            self.norms.append(nn.LayerNorm(hidden))
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.embedding_dim = 2 * hidden

    def embed(self, batch: Batch) -> torch.Tensor:
        """Per-molecule embedding (n_molecules, 2 * hidden): sum and mean of final atom states.

        The residual stream, the neighbour sums and the pooling stay in float32 under mixed precision
        (bfloat16 sums over a molecule's atoms were 8.6% off the float32 output; bench/gpu_check.py).
        """
        h = self.node_in(batch.x).float()
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.relu(norm(conv(h, batch.edge_index, batch.edge_attr))).float()
        return torch.cat([global_add_pool(h, batch.batch), global_mean_pool(h, batch.batch)], dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Standardised prediction per molecule (n_molecules,); ``predict`` undoes the scaling."""
        return self.head(self.embed(batch)).squeeze(-1)


def _check(graphs: Sequence[Data], y: np.ndarray | None = None) -> None:
    if len(graphs) == 0:
        raise MoleculeError("molecule GNN: no graphs given")
    if y is not None:
        if len(y) != len(graphs):
            raise MoleculeError(f"molecule GNN: {len(graphs)} graphs but {len(y)} targets y")
        if not np.all(np.isfinite(y)):
            raise MoleculeError("molecule GNN: targets y contain NaN or infinite values")


def fit_molecule_gnn(
    graphs: Sequence[Data],
    y: Sequence[float] | np.ndarray,
    epochs: int = 30,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    hidden: int = 64,
    layers: int = 3,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-5,
) -> MoleculeGNN:
    """Train a MoleculeGNN regressor on graphs -> y (MSE on standardised y, AdamW, cosine LR); returns it in eval mode."""
    y = np.asarray(y, dtype=np.float32)
    _check(graphs, y)
    device = default_device(device)
    torch.manual_seed(seed)
    model = MoleculeGNN(graphs[0].num_node_features, graphs[0].edge_attr.shape[1], hidden, layers).to(device)
    model.y_mean.fill_(float(y.mean()))
    model.y_std.fill_(float(y.std()) if y.std() > 0 else 1.0)
    targets = (torch.from_numpy(y) - model.y_mean.cpu()) / model.y_std.cpu()
    data = [g.clone() for g in graphs]
    for g, t in zip(data, targets):
        g.y = t.reshape(1)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for batch in loader:
            batch = batch.to(device)
            optimiser.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = nn.functional.mse_loss(model(batch).float(), batch.y)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def _batched(model: MoleculeGNN, graphs: Sequence[Data], forward, batch_size: int) -> torch.Tensor:
    """Run ``forward(batch)`` over the graphs in batches (eval mode, autocast on CUDA) -> float32 on CPU."""
    _check(graphs)
    device = next(model.parameters()).device
    model.eval()
    out = []
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        with _autocast(device):
            out.append(forward(batch).float())
    return torch.cat(out).cpu()


def predict(model: MoleculeGNN, graphs: Sequence[Data], batch_size: int = 256) -> np.ndarray:
    """Predictions (n_molecules,) in the units of the training targets."""
    pred = _batched(model, graphs, model, batch_size) * model.y_std.cpu() + model.y_mean.cpu()
    return pred.numpy().astype(np.float64)


def embed(model: MoleculeGNN, graphs: Sequence[Data], batch_size: int = 256) -> np.ndarray:
    """Per-molecule embeddings (n_molecules, model.embedding_dim) for downstream fusion."""
    return _batched(model, graphs, model.embed, batch_size).numpy()


def cross_validate_gnn(
    graphs: Sequence[Data],
    y: Sequence[float] | np.ndarray,
    n_splits: int = 5,
    seed: int = 0,
    **fit_kwargs,
) -> dict[str, list[float] | float]:
    """K-fold CV of fit_molecule_gnn: per-fold rmse (units of y) and r2, with their means and stds."""
    y = np.asarray(y, dtype=np.float64)
    _check(graphs, y)
    if not 2 <= n_splits <= len(graphs):
        raise MoleculeError(f"molecule GNN: n_splits must be in [2, {len(graphs)}], got {n_splits}")
    rmse, r2 = [], []
    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(folds.split(np.arange(len(graphs)))):
        model = fit_molecule_gnn([graphs[i] for i in train], y[train], seed=seed + fold, **fit_kwargs)
        pred = predict(model, [graphs[i] for i in test])
        rmse.append(float(np.sqrt(mean_squared_error(y[test], pred))))
        r2.append(float(r2_score(y[test], pred)))
    return {
        "rmse": rmse, "r2": r2,
        "rmse_mean": float(np.mean(rmse)), "rmse_std": float(np.std(rmse)),
        "r2_mean": float(np.mean(r2)), "r2_std": float(np.std(r2)),
    }
