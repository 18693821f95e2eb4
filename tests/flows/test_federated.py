"""Federated fusion with Flower: site split, pooled statistics from site sums, FedProx's pull toward the
global weights, and a simulation (sites as processes) that beats every site alone and nears centralised."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.federated.sites import (
    ModelSpec,
    SiteSpec,
    assign_sites,
    build_model,
    combine_sums,
    feature_sums,
    get_weights,
    local_fit,
)
from fusion.data import MultimodalDataset

pytestmark = pytest.mark.slow  # a federated simulation over three sites


def _planted(n: int, seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.Series]:
    """Three modalities, each a weak noisy view of a binary label (pooled data needed to learn it well)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pats = [f"P{i:03d}" for i in range(n)]
    frames = {}
    for name, d in (("expression", 24), ("ct", 8), ("pet", 6)):
        x = rng.normal(size=(n, d))
        x[:, :4] += 0.55 * (2 * y[:, None] - 1)
        frames[name] = pd.DataFrame(x, index=pats)
    return frames, pd.Series(np.where(y == 1, "subtype_b", "subtype_a"), index=pats)


def test_sites_differ_in_label_mix_and_missing_rates():
    y = np.repeat([0, 1], 300)
    site = assign_sites(y, SiteSpec(n_sites=3, label_skew=0.6, seed=1))
    frac_b = np.array([y[site == k].mean() for k in range(3)])
    assert frac_b.max() - frac_b.min() > 0.25  # different subtype mixes
    assert np.bincount(site).min() > 100


def test_pooled_statistics_from_site_sums_equal_the_pooled_data():
    frames, _ = _planted(60)
    parts = [feature_sums(frames, list(frames["ct"].index[i::3])) for i in range(3)]
    stats = combine_sums(parts)
    x = frames["ct"].to_numpy()
    np.testing.assert_allclose(stats["ct"][0], x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats["ct"][1], x.std(0), rtol=1e-10)


def test_fedprox_proximal_term_keeps_local_weights_near_the_global_ones():
    frames, labels = _planted(80)
    y = (labels == "subtype_b").to_numpy().astype(np.int64)
    ds = MultimodalDataset.from_frames({k: v.astype(np.float32) for k, v in frames.items()}, list(frames["ct"].index), y)
    spec = ModelSpec(lr=1e-2)
    drift = {}
    for mu in (0.0, 10.0):
        model = build_model(ds, 1, "binary", spec)
        start = np.concatenate([w.ravel() for w in get_weights(model)])
        local_fit(model, ds, np.arange(40), spec, epochs=30, proximal_mu=mu)
        drift[mu] = np.linalg.norm(np.concatenate([w.ravel() for w in get_weights(model)]) - start)
    assert drift[10.0] < 0.5 * drift[0.0]


@pytest.mark.slow
def test_federated_simulation_beats_every_site_and_nears_centralised():
    from flwr.common import ndarrays_to_parameters

    from flows.federated.simulate import FederatedConfig, simulate

    frames, labels = _planted(180, seed=2)
    cfg = FederatedConfig(rounds=6, local_epochs=8, folds=2, sites=SiteSpec(n_sites=3, seed=0))
    out = simulate(frames, labels, cfg)
    assert out["federated_auc"] > max(out["site_auc"])
    assert out["federated_auc"] >= out["centralised_auc"] - 0.03
    # every round moves the global weights down to and the updates up from each of the 3 sites, nothing else
    ds = MultimodalDataset.from_frames({k: v.astype(np.float32) for k, v in frames.items()}, list(frames["ct"].index),
                                       np.zeros(180, dtype=np.int64))
    weights = get_weights(build_model(ds, 1, "binary", cfg.model))
    one_copy = sum(len(t) for t in ndarrays_to_parameters(weights).tensors)
    assert out["bytes_per_round"] == 2 * 3 * one_copy
    assert out["sites"]["extra_missing_rate"] == [0.0, 0.2, 0.4]
