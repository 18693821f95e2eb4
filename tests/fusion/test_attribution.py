"""Tests for fusion.attribution: planted informative features get the top attributions."""

import numpy as np
import pandas as pd
import torch

from fusion.attribution import feature_attribution, modality_contribution
from fusion.data import MultimodalDataset
from fusion.model import FusionModel
from fusion.train import TrainConfig, fit, predict
from fusion.metrics import roc_auc

PLANTED = [3, 11]


def _expression_dataset(n=120, d=20, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    expr = rng.normal(size=(n, d))
    expr[:, PLANTED] += 1.5 * (2 * y - 1)[:, None]  # two marker genes
    clin = rng.normal(size=(n, 3))  # an uninformative second modality, missing for 30%
    patients = [f"TCGA-FX-{i:04d}" for i in range(1, n + 1)]
    genes = [f"GENE{j}" for j in range(d)]
    has_clin = rng.random(n) > 0.3
    frames = {
        "expr": pd.DataFrame(expr, index=patients, columns=genes),
        "clin": pd.DataFrame(clin, index=patients)[has_clin],
    }
    return MultimodalDataset.from_frames(frames, patients, y=y)


def test_planted_genes_get_top_attributions():
    ds = _expression_dataset()
    train = np.arange(ds.n_patients)
    ds = ds.standardise(train)
    torch.manual_seed(0)
    model = FusionModel.for_dataset(ds, ["expr", "clin"], "early", 1, embed_dim=16)
    fit(model, ds, train, TrainConfig(epochs=80, seed=0, num_threads=1))
    assert roc_auc(ds.y.numpy(), predict(model, ds, train)) > 0.9
    attr = feature_attribution(model, ds, "expr", train)
    assert attr.shape == (20,) and (attr >= 0).all()
    top = np.argsort(attr)[::-1][:2]
    assert set(top.tolist()) == set(PLANTED)
    assert attr[PLANTED].min() > 2 * np.delete(attr, PLANTED).max()
    # the expression modality drives the prediction, the noise modality barely does
    contrib = modality_contribution(model, ds, train).set_index("modality")
    assert contrib.loc["expr", "mean_abs_change"] > 3 * contrib.loc["clin", "mean_abs_change"]
    assert contrib.loc["clin", "n_patients"] == int(ds.modalities["clin"].present.sum())
