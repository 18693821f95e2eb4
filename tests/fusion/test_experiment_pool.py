"""Neural models trained on a pool of processes give exactly the per-fold results of one process."""

from __future__ import annotations

from fusion.experiment import ExperimentOptions, run_experiment
from tests.fusion.experiment_tables import kfold_splits, planted_table


def test_two_workers_give_the_same_folds_as_one():
    data = planted_table("classification", n=60, d=10, seed=4)
    splits = kfold_splits(data)[:3]
    opts = ExperimentOptions(epochs=8, n_components=4, robustness=False, strategies=("late",), baseline=False)
    one = run_experiment(data, splits, opts, workers=1)
    two = run_experiment(data, splits, opts, workers=2)
    assert [r.name for r in one] == [r.name for r in two] == ["single:a", "single:b", "fusion:late"]
    for a, b in zip(one, two):
        assert a.folds == b.folds, a.name  # bit for bit: each fold seeds its own model
        assert a.oof.equals(b.oof)
    assert one[0].mean > 0.7  # and they learned the planted class signal of modality a
