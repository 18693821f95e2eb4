"""The experiment engine on planted tables: every task kind, shuffled labels at chance, no leakage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.experiment import ExperimentOptions, fold_dataset, run_experiment
from fusion.survival_heads import nll_risk, nll_surv_loss, time_bin_edges, to_bins
from fusion.task_metrics import classification_metrics
from tests.fusion.experiment_tables import kfold_splits, planted_table

FAST = dict(epochs=30, n_components=8, robustness=True, strategies=("late",), lr=3e-3)


def _by_name(results):
    return {r.name: r for r in results}


def test_classification_three_classes_with_a_class_missing_from_a_fold():
    data = planted_table("classification", n=120, seed=1)
    splits = kfold_splits(data)
    # move every class-2 patient of fold 0's validation part into its training part
    tr, va = splits[0]
    lab = data.target["label"]
    moved = [p for p in va if lab[p] == 2]
    splits[0] = (tr + moved, [p for p in va if lab[p] != 2])
    res = _by_name(run_experiment(data, splits, ExperimentOptions(**FAST)))
    for r in res.values():
        assert r.metric == "auc" and len(r.folds) == 5 and np.isfinite(r.folds).all()
        assert all(np.isfinite(m["balanced_accuracy"]) for m in r.fold_metrics)
    assert res["single:a"].mean > 0.75 and res["baseline:logistic"].mean > 0.75
    assert abs(res["single:b"].mean - 0.5) < 0.12  # the noise modality alone is at chance
    assert res["fusion:late"].mean > 0.7
    curve = res["fusion:late"].extra["robustness"]
    assert set(curve) == {"0.0", "0.5"}
    contrib = res["fusion:late"].extra["contributions"]
    assert contrib["a"] > contrib["b"]  # dropping the informative modality costs more


def test_macro_auc_over_present_classes_by_hand():
    y = np.array([0, 0, 1, 1])  # class 2 absent from this fold
    p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    m = classification_metrics(y, p, 3)
    # class 0 vs rest: scores 0.8, 0.3 (pos) vs 0.2, 0.5 (neg) -> 3/4; class 1: 0.7, 0.4 vs 0.1, 0.6 -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (1 / 2 + 1 / 2))


@pytest.mark.parametrize("task,metric,low,high", [("regression", "r2", 0.5, 1.0), ("survival", "c_index", 0.65, 1.0)])
def test_planted_signal_recovered(task, metric, low, high):
    data = planted_table(task, n=120, seed=2)
    res = _by_name(run_experiment(data, kfold_splits(data), ExperimentOptions(**{**FAST, "robustness": False})))
    assert res["single:a"].metric == metric and low < res["single:a"].mean < high
    base = next(r for r in res.values() if r.strategy == "baseline")
    assert low < base.mean < high
    if task == "regression":
        assert res["single:a"].fold_metrics[0]["spearman"] > 0.6


@pytest.mark.parametrize("task,tol", [("classification", 0.1), ("survival", 0.05)])
def test_shuffled_labels_score_chance(task, tol):
    data = planted_table(task, n=500, d=100, seed=7, shuffle=True)
    opts = ExperimentOptions(**{**FAST, "robustness": False, "strategies": ()})
    for r in run_experiment(data, kfold_splits(data), opts):
        assert abs(r.mean - 0.5) <= tol, f"{r.name}: {r.metric} {r.mean:.3f} with shuffled labels"


def test_preprocessing_is_fitted_on_the_training_fold_only():
    data = planted_table("regression", n=60, seed=4)
    tr, va = kfold_splits(data)[0]
    opts = ExperimentOptions(n_components=4)
    before, a, _ = fold_dataset(data, tr, va, opts, ["a", "b"])
    for m in data.features.values():
        m.loc[va] = m.loc[va] * 100 + 1e3  # wildly different validation rows
    after, _, _ = fold_dataset(data, tr, va, opts, ["a", "b"])
    for k in ("a", "b"):
        torch.testing.assert_close(before.modalities[k].values[a], after.modalities[k].values[a])


def test_nll_loss_and_risk_by_hand():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])  # hazards 0.5, 0.5 -> S = 0.5, 0.25
    bins = torch.tensor([1, 0])
    event = torch.tensor([True, False])
    # uncensored in bin 1: -log S_0 - log h_1 = 2 log 2; censored in bin 0: -log S_0 = log 2
    expected = ((1 - 0.4) * 2 * np.log(2) + 0.4 * 2 * np.log(2) + (1 - 0.4) * np.log(2)) / 2
    assert float(nll_surv_loss(logits, bins, event, alpha=0.4)) == pytest.approx(expected, rel=1e-5)
    assert nll_risk(logits).tolist() == pytest.approx([-0.75, -0.75])
    edges = time_bin_edges(np.array([1, 2, 3, 4, 5, 6, 7, 8.0]), np.ones(8, bool), n_bins=4)
    assert edges.tolist() == pytest.approx([2.75, 4.5, 6.25])
    assert to_bins(np.array([1.0, 3.0, 9.0]), edges).tolist() == [0, 1, 3]


def test_inner_cv_selection_keeps_fusion_level_with_its_best_member():
    data = planted_table("classification", n=90, d=10, seed=5)
    opts = ExperimentOptions(**{**FAST, "strategies": (), "select": ("late",), "robustness": False,
                                "baseline": False, "epochs": 20})
    res = _by_name(run_experiment(data, kfold_splits(data), opts))
    sel = res["fusion:late+select"]
    chosen = [c["modalities"] for c in sel.extra["tuned"]]
    assert all("a" in c for c in chosen), chosen  # the noise modality alone is never picked
    assert all(set(c["inner"]) == {"a", "b", "a+b"} for c in sel.extra["tuned"])
    assert sel.mean >= res["single:a"].mean - 0.03, (sel.mean, res["single:a"].mean)
