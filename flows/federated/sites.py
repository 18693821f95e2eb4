"""Site data for federated fusion: a cohort's patient-indexed embeddings split into sites with different
label mixes and missing-modality rates, a standardisation from aggregated per-site sums, and the local
training step (FedAvg, or FedProx with a proximal term) every site runs on its own patients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fusion.data import MultimodalDataset
from fusion.model import FusionModel
from fusion.train import TrainConfig, fit


@dataclass
class SiteSpec:
    """How the cohort is split: `n_sites`, how strongly label mixes differ (0 = same mix everywhere),
    and per-site extra probability of dropping each non-anchor modality (the last site drops most)."""

    n_sites: int = 3
    label_skew: float = 0.6
    max_missing_rate: float = 0.4
    seed: int = 0


@dataclass
class ModelSpec:
    """The fusion model every party trains (same architecture everywhere) and its local optimisation."""

    strategy: str = "late"
    embed_dim: int = 16
    hidden: int = 16
    dropout: float = 0.3
    modality_dropout: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    kwargs: dict = field(default_factory=dict)


def assign_sites(labels: np.ndarray, spec: SiteSpec) -> np.ndarray:
    """Site index per patient: class c's patients go to site k with weight 1 + skew*cos(2*pi*(k/N + c/C))."""
    rng = np.random.default_rng(spec.seed)
    classes = np.unique(labels)
    k = np.arange(spec.n_sites)
    site = np.empty(len(labels), dtype=np.int64)
    for ci, c in enumerate(classes):
        w = 1.0 + spec.label_skew * np.cos(2 * np.pi * (k / spec.n_sites + ci / max(len(classes), 2)))
        rows = np.flatnonzero(labels == c)
        site[rows] = rng.choice(spec.n_sites, size=len(rows), p=w / w.sum())
    return site


def site_missing_rates(spec: SiteSpec) -> np.ndarray:
    """Extra per-modality drop probability of each site: 0 at site 0 rising to `max_missing_rate`."""
    return np.linspace(0.0, spec.max_missing_rate, spec.n_sites)


def apply_site_missingness(frames: dict[str, pd.DataFrame], site_of: pd.Series, spec: SiteSpec,
                           anchor: str) -> dict[str, pd.DataFrame]:
    """Drop rows of every modality but `anchor` at each site's rate (seeded): sites differ in what they hold."""
    rng = np.random.default_rng(spec.seed + 1)
    rates = site_missing_rates(spec)
    out = {}
    for name, df in frames.items():
        if name == anchor:
            out[name] = df
            continue
        sites = site_of.reindex(df.index).to_numpy()
        keep = np.array([rng.random() >= rates[int(s)] if s == s else True for s in sites])
        out[name] = df[keep]
    return out


def feature_sums(frames: dict[str, pd.DataFrame], patients: list[str]) -> dict[str, np.ndarray]:
    """Per modality: [n, sum, sum of squares] per feature over this party's patients (what a site shares)."""
    out = {}
    for name, df in frames.items():
        x = df.reindex([p for p in patients if p in df.index]).to_numpy(dtype=np.float64)
        out[name] = np.stack([np.full(x.shape[1], len(x), dtype=np.float64), x.sum(0), (x ** 2).sum(0)])
    return out


def combine_sums(parts: list[dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Aggregate per-site sums into per-feature mean and standard deviation (pooled, no patient rows)."""
    out = {}
    for name in parts[0]:
        n, s, ss = np.sum([p[name] for p in parts], axis=0)
        n = np.maximum(n, 1.0)
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean ** 2, 0.0))
        out[name] = (mean, np.where(std > 1e-8, std, 1.0))
    return out


def standardise(frames: dict[str, pd.DataFrame], stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, pd.DataFrame]:
    """z-score every modality with the shared statistics."""
    return {name: (df - stats[name][0]) / stats[name][1] for name, df in frames.items()}


def build_model(dataset: MultimodalDataset, n_outputs: int, task: str, spec: ModelSpec) -> FusionModel:
    """The shared fusion model (seeded: every party starts from identical weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return FusionModel(dataset.modality_names, dataset.in_dims, spec.strategy, n_outputs=n_outputs,
                           embed_dim=spec.embed_dim, hidden=spec.hidden, dropout=spec.dropout,
                           modality_dropout=spec.modality_dropout, task=task, strategy_kwargs=spec.kwargs or None)


def get_weights(model: FusionModel) -> list[np.ndarray]:
    """Every parameter and buffer, in state_dict order (what travels)."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: FusionModel, weights: list[np.ndarray]) -> None:
    """Load weights sent by the server (state_dict order)."""
    keys = list(model.state_dict().keys())
    model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(keys, weights)}, strict=True)


def local_fit(model: FusionModel, dataset: MultimodalDataset, idx: np.ndarray, spec: ModelSpec, epochs: int,
              proximal_mu: float = 0.0, seed: int = 0) -> FusionModel:
    """One site's local training from the current (global) weights; FedProx adds mu/2 * ||w - w_global||^2."""
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None

    def proximal(m: FusionModel) -> torch.Tensor:
        return 0.5 * proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor))

    cfg = TrainConfig(epochs=epochs, lr=spec.lr, weight_decay=spec.weight_decay, seed=seed, device="cpu",
                      num_threads=1)
    return fit(model, dataset, idx, cfg, extra_loss=proximal if anchor is not None else None)
