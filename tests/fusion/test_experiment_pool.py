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


def _where(data, splits, opts, item):
    """A pool job: its process's parent and whether torch was imported before the job ran."""
    import os
    import sys

    return os.getppid(), "torch" in sys.modules and item


def test_workers_forked_from_the_fork_server_hold_torch_and_learn_the_same():
    """Under ``worker_context(forked_workers)`` (what flows.experiments.runner sets) the pool's workers are
    children of the process's fork server, torch already imported there, and train the same folds bit for
    bit as spawned workers."""
    import os
    from multiprocessing import forkserver

    from flows.store.isolate import forked_workers
    from fusion.experiment_pool import run_pool, worker_context, worker_cpu_seconds

    data = planted_table("classification", n=60, d=10, seed=4)
    splits = kfold_splits(data)[:3]
    opts = ExperimentOptions(epochs=8, n_components=4, robustness=False, strategies=("late",), baseline=False)
    cpu_before = worker_cpu_seconds()
    spawned = run_experiment(data, splits, opts, workers=2)
    assert worker_cpu_seconds() == cpu_before  # spawned workers are our children: os.times() counts them
    with worker_context(forked_workers):
        forked = run_experiment(data, splits, opts, workers=2)
        where = run_pool(data, splits, opts, _where, ["a", "b", "c"], workers=2)
    server = forkserver._forkserver._forkserver_pid
    assert server is not None and server != os.getpid()
    assert {ppid for ppid, _ in where} == {server}  # forked by the server, not by this (threaded) process
    assert [item for _, item in where] == ["a", "b", "c"]  # torch was there before the job
    assert worker_cpu_seconds() - cpu_before > 0.2  # forked workers are not: they report their CPU
    for a, b in zip(spawned, forked):
        assert a.folds == b.folds, a.name
        assert a.oof.equals(b.oof)
