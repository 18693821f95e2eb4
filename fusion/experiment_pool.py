"""The neural models of an experiment on a pool of processes: same results as one process, less wall time.

Every model seeds each fold from ``opts.seed`` and the fold number (``run_neural``), so where a model
trains does not change what it learns; ``workers`` changes the wall time only. Workers are spawned
(never forked from a process with torch threads running) and receive the data once; a caller may have them
forked from a clean fork server instead (``worker_context``: the flows layer passes its own), so that each
costs a fork, not its imports.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Sequence

_STATE: dict = {}
# what a worker imports before its first job (torch, the fusion code); this module itself imports neither, so that
# naming them costs a caller nothing
POOL_MODULES = ("fusion.experiment_pool", "fusion.neural_runs")


@contextmanager
def _spawned(modules: Sequence[str]) -> Iterator[multiprocessing.context.BaseContext]:
    yield multiprocessing.get_context("spawn")


_worker_start: Callable[[Sequence[str]], AbstractContextManager] = _spawned


@contextmanager
def worker_context(factory: Callable[[Sequence[str]], AbstractContextManager]) -> Iterator[None]:
    """Within the block, the pools start their workers from ``factory(modules)``: a context manager yielding
    a multiprocessing context whose new processes have ``modules`` imported and no threads of the caller
    (e.g. ``flows.store.isolate.forked_workers``); outside it, workers are spawned."""
    global _worker_start
    before, _worker_start = _worker_start, factory
    try:
        yield
    finally:
        _worker_start = before

Plan = tuple[str, list[str], "str | None", bool]


def _init(data, splits, opts) -> None:
    """Worker initialiser: the experiment's data, folds and options, sent once per worker; the worker's BLAS
    threads capped like its torch threads (the pool is the parallelism: nested pools would oversubscribe)."""
    from threadpoolctl import threadpool_limits

    if opts.num_threads is not None:
        threadpool_limits(limits=int(opts.num_threads))
    _STATE.update(data=data, splits=splits, opts=opts)


def _cost(data, item: Plan) -> float:
    """Rough relative cost of a model (for longest-first scheduling): inner-CV selection fits each candidate
    subset on every inner fold; slide bags and more modalities make each fit dearer."""
    strategy, mods, head, select = item
    bags = set(getattr(data, "bags", None) or {})
    per_fit = 1.0 + 0.5 * len(mods) + 3.0 * len(bags & set(mods))
    return per_fit * (12.0 if select else 1.0)


def _neural_job(data, splits, opts, item: Plan):
    from fusion.neural_runs import run_neural

    strategy, mods, head, select = item
    return run_neural(data, splits, opts, strategy, mods, head, select)


def _job(fn, item):
    """A job in a worker: (its pid, the worker's CPU seconds so far, ``fn``'s value)."""
    import os

    value = fn(_STATE["data"], _STATE["splits"], _STATE["opts"], item)
    t = os.times()
    return os.getpid(), t.user + t.system, value


_FORKED_CPU = [0.0]  # CPU seconds of finished pool workers that were not this process's children


def worker_cpu_seconds() -> float:
    """CPU seconds (user + system, from fork to their last job) of the pools' workers that were forked by
    another process (a fork server: ``worker_context``), which this process's ``os.times()`` never sees;
    spawned workers are this process's children and are counted there."""
    return _FORKED_CPU[0]


def run_pool(data, splits, opts, fn: Callable, items: Sequence, workers: int = 1,
             cost: Callable[[object], float] | None = None, progress: Callable[[object], None] | None = None) -> list:
    """``fn(data, splits, opts, item)`` for every item (a module-level function: workers import it), in item
    order; on ``workers`` worker processes when > 1 (spawned, or see ``worker_context``; dearest ``cost`` first),
    else here."""
    say = progress or (lambda r: None)
    if workers <= 1 or len(items) < 2:
        out = []
        for item in items:
            out.append(fn(data, splits, opts, item))
            say(out[-1])
        return out
    # longest first, so that no worker is left alone with the dearest job at the end; results in item order
    order = sorted(range(len(items)), key=lambda i: -(cost(items[i]) if cost else 1.0))
    with _worker_start(POOL_MODULES) as ctx, ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx,
                                                                 initializer=_init, initargs=(data, splits, opts)) as pool:
        futures = {i: pool.submit(_job, fn, items[i]) for i in order}
        out, cpu = [], {}
        for i in range(len(items)):
            pid, used, value = futures[i].result()
            cpu[pid] = max(used, cpu.get(pid, 0.0))
            out.append(value)
            say(value)
        if ctx.get_start_method() != "spawn":  # forked by a fork server: not our children
            _FORKED_CPU[0] += sum(cpu.values())
        return out


def run_models(data, splits, opts, plan: Sequence[Plan], workers: int = 1,
               progress: Callable[[object], None] | None = None) -> list:
    """``run_neural`` for every (strategy, modalities, head, select) of ``plan``, in plan order."""
    return run_pool(data, splits, opts, _neural_job, plan, workers, lambda it: _cost(data, it), progress)
