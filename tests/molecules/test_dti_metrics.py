"""Paired bootstrap of the DTI metrics: each resample's CI and MSE equal those of the explicitly resampled pairs."""

from __future__ import annotations

import numpy as np
import pytest

from molecules.dti_metrics import affinity_ci, bootstrap_metrics, mse


def test_bootstrap_resamples_match_explicit_resampling():
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(6.0, 1.0, 60), 1)  # rounded: tied affinities, as Davis' many 5.0s
    y[:15] = 5.0
    preds = {"good": y + rng.normal(0, 0.3, 60), "coarse": np.round(y + rng.normal(0, 0.6, 60))}  # ties in p too
    out = bootstrap_metrics(y, preds, n_boot=4, seed=7, batch=3)
    draws = np.random.default_rng(7)
    for b in range(4):
        idx = draws.integers(0, 60, 60)
        for name, p in preds.items():
            assert out[name]["ci"][b] == pytest.approx(affinity_ci(y[idx], p[idx]), abs=1e-9)
            assert out[name]["mse"][b] == pytest.approx(mse(y[idx], p[idx]), rel=1e-9)
    assert (out["good"]["ci"] > out["coarse"]["ci"]).all()
