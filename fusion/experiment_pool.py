"""The neural models of an experiment on a pool of processes: same results as one process, less wall time.

Every model seeds each fold from ``opts.seed`` and the fold number (``run_neural``), so where a model
trains does not change what it learns; ``workers`` changes the wall time only. Workers are spawned
(never forked from a process with torch threads running) and receive the data once.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from fusion.neural_runs import run_neural

_STATE: dict = {}

Plan = tuple[str, list[str], "str | None", bool]


def _init(data, splits, opts) -> None:
    """Worker initialiser: the experiment's data, folds and options, sent once per worker."""
    _STATE.update(data=data, splits=splits, opts=opts)


def _job(item: Plan):
    strategy, mods, head, select = item
    return run_neural(_STATE["data"], _STATE["splits"], _STATE["opts"], strategy, mods, head, select)


def run_models(data, splits, opts, plan: Sequence[Plan], workers: int = 1,
               progress: Callable[[object], None] | None = None) -> list:
    """``run_neural`` for every (strategy, modalities, head, select) of ``plan``, in plan order."""


    say = progress or (lambda r: None)
    if workers <= 1 or len(plan) < 2:
        out = []
        for strategy, mods, head, select in plan:
            out.append(run_neural(data, splits, opts, strategy, mods, head, select))
            say(out[-1])
        return out
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(plan)), mp_context=ctx, initializer=_init,
                             initargs=(data, splits, opts)) as pool:
        out = []
        for r in pool.map(_job, plan):
            out.append(r)
            say(r)
        return out
