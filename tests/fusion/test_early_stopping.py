"""Early stopping on a held-out part of the training patients (TrainConfig.early_stopping)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.errors import FusionConfigError
from fusion.data import MultimodalDataset
from fusion.model import FusionModel
from fusion.train import TrainConfig, _early_stopping_rows, fit, predict


def _dataset(n: int, d: int, seed: int) -> MultimodalDataset:
    """Binary labels from the first feature (weak signal) plus many noise features: easy to overfit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 1.5 * rng.normal(size=n) > 0).astype(np.int64)
    pats = [f"P{i}" for i in range(n)]
    return MultimodalDataset.from_frames({"a": pd.DataFrame(x, index=pats)}, pats, y)


def _test_loss(model: FusionModel, ds: MultimodalDataset) -> float:
    p = torch.as_tensor(predict(model, ds, np.arange(ds.n_patients))).float().clamp(1e-6, 1 - 1e-6)
    return float(torch.nn.functional.binary_cross_entropy(p, ds.y.float()))


def test_early_stopping_keeps_the_weights_that_generalise(one_torch_thread):
    train, test = _dataset(120, 60, seed=0), _dataset(1000, 60, seed=1)
    losses = {}
    for es in (None, 0.25):
        torch.manual_seed(0)
        model = FusionModel.for_dataset(train, ["a"], "early", 1, task="binary", embed_dim=32, hidden=64,
                                        dropout=0.0, modality_dropout=0.0)
        fit(model, train, np.arange(120), TrainConfig(epochs=120, lr=2e-2, weight_decay=0.0, seed=3,
                                                      early_stopping=es))
        losses[es] = _test_loss(model, test)
    # 120 epochs on 120 noisy patients with 60 features overfit; the held-out epoch choice stops before that
    assert losses[0.25] < 0.9 * losses[None], losses


def test_held_out_rows_are_stratified_and_deterministic():
    y = torch.tensor([0] * 40 + [1] * 20)
    cfg = TrainConfig(seed=5, early_stopping=0.25)
    held = _early_stopping_rows("binary", y, cfg)
    assert (y[held] == 0).sum() == 10 and (y[held] == 1).sum() == 5
    assert np.array_equal(held, _early_stopping_rows("binary", y, cfg))
    assert _early_stopping_rows("binary", y[:8], cfg) is None  # too few patients: train on all of them
    with pytest.raises(FusionConfigError, match="early_stopping"):
        TrainConfig(early_stopping=0.7)
