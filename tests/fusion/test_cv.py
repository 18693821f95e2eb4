"""Tests for fusion.cv on planted data: fusion beats single modalities, survival and regression signal
is recovered, folds are shared, results are reproducible."""

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.cv import compare_strategies, cross_validate, make_splits
from fusion.data import MultimodalDataset
from fusion.metrics import roc_auc
from fusion.train import TrainConfig
from tests.fusion.planted import LAYOUT, N_INFORMATIVE, make_planted

CONFIG = TrainConfig(epochs=60, num_threads=1)
FUSION = ["early", "late", "attention", "kronecker"]


@pytest.fixture(scope="module")
def planted():
    return make_planted(n=100, seed=0)


@pytest.fixture(scope="module")
def comparison(planted):
    ds, _ = planted
    return compare_strategies(
        ds, FUSION, ds.modality_names, n_splits=4, seed=0, train_config=CONFIG, return_results=True
    )


def test_planted_single_modalities_are_weak(planted):
    # oracle per modality: mean of the informative features, prior 0.5 when missing
    ds, truth = planted
    for m, mod in ds.modalities.items():
        v = mod.values[..., :N_INFORMATIVE]
        if mod.is_bag:
            w = mod.instance_mask.float().unsqueeze(-1)
            v = (v * w).sum(1) / w.sum(1)
        score = np.where(mod.present.numpy(), v.mean(-1).numpy(), 0.0)
        assert 0.6 < roc_auc(truth["y"], score) < 0.8, m
    assert all(0.15 < 1 - mod.present.float().mean() < 0.35 for mod in ds.modalities.values())


def test_every_fusion_strategy_beats_best_single_modality(comparison):
    table, _ = comparison
    assert list(table.columns) == ["name", "kind", "strategy", "modalities", "metric", "mean", "std", "n_folds"]
    assert len(table) == len(FUSION) + len(LAYOUT)
    assert (table["metric"] == "auc").all() and (table["n_folds"] == 4).all()
    best_single = table.loc[table["kind"] == "single", "mean"].max()
    fused = table[table["kind"] == "fusion"].set_index("strategy")["mean"]
    assert set(fused.index) == set(FUSION)
    for strategy, auc in fused.items():
        assert auc >= best_single + 0.05, (strategy, auc, best_single)
    assert fused.min() > 0.75


def test_experiments_share_folds_and_report_every_patient(comparison, planted):
    ds, _ = planted
    _, results = comparison
    n_test = {name: tuple(r.folds["n_test"]) for name, r in results.items()}
    assert len(set(n_test.values())) == 1 and sum(next(iter(n_test.values()))) == ds.n_patients
    for r in results.values():
        assert list(r.oof.index) == ds.patients
        assert r.oof["prediction"].notna().all()
        assert r.oof["prediction"].between(0, 1).all()
    # a single baseline gives patients lacking its modality the training-fold prevalence (~0.5 here)
    wsi = results["single:wsi"].oof["prediction"]
    missing = ~ds.modalities["wsi"].present.numpy()
    np.testing.assert_allclose(wsi[missing], 0.5, atol=0.02)


def test_same_seed_gives_identical_results(comparison, planted):
    ds, _ = planted
    _, results = comparison
    splits = make_splits(ds, "binary", n_splits=4, seed=0)
    again = cross_validate(ds, modalities=ds.modality_names, strategy="late", splits=splits, train_config=CONFIG)
    first = results["fusion:late"]
    pd.testing.assert_frame_equal(first.folds, again.folds)
    pd.testing.assert_frame_equal(first.oof, again.oof)
    assert first.mean == again.mean


def test_survival_c_index_recovers_planted_risk():
    ds, _ = make_planted(n=100, seed=0, task="survival", beta=1.0, missing=0.2)
    res = cross_validate(
        ds, modalities=ds.modality_names, strategy="early", task="survival", n_splits=4, seed=0,
        train_config=TrainConfig(epochs=100, num_threads=1),
    )
    assert res.metric == "c_index"
    assert res.mean > 0.65
    # folds were stratified on the event indicator
    assert res.folds["n_test"].tolist() == [25, 25, 25, 25]


def test_regression_recovers_planted_phenotype():
    rng = np.random.default_rng(3)
    n = 100
    x = rng.normal(size=(n, 5)).astype(np.float32)
    target = 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.3 * rng.normal(size=n) + 50.0  # e.g. a volume in ml
    frame = pd.DataFrame(x, index=[f"P{i}" for i in range(n)])
    ds = MultimodalDataset.from_frames({"ct": frame}, list(frame.index), y=target.astype(np.float32))
    res = cross_validate(ds, modalities=["ct"], strategy="single", task="regression", n_splits=4, seed=0, train_config=CONFIG)
    assert res.metric == "r2"
    assert res.mean > 0.8
    # predictions come back in the target's own units
    assert abs(res.oof["prediction"].mean() - 50.0) < 1.0
