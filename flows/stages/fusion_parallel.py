"""The fusion experiments split into independent jobs (one per task x strategy or single modality, plus
the model evidence) run on a pool of processes; the table equals the sequential run's, row for row.

Each job trains on the same folds with the same per-fold seeds as ``run_fusion_experiments`` does in
one process, so splitting changes the wall time only (about 1/workers of it on idle cores).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd

_DATA: dict[str, Any] = {}


def _init(frames, bags, labels, survival, cfg) -> None:
    """Worker initialiser: the cohort's inputs, sent once per worker process."""
    _DATA.update(frames=frames, bags=bags, labels=labels, survival=survival, cfg=cfg)


def _job(part: str, strategies: list[str], singles: list[str]) -> dict[str, Any]:
    from flows.stages.fusion_experiments import run_fusion_experiments
    from fusion.train import seeded

    cfg = {**_DATA["cfg"], "strategies": strategies, "single_modalities": singles}
    with seeded(cfg["seed"]):  # the evidence model's initial weights come from the global generator
        return run_fusion_experiments(_DATA["frames"], _DATA["bags"], _DATA["labels"], cfg,
                                      survival=_DATA["survival"], parts=(part,))


def fusion_jobs(cfg: dict, with_survival: bool) -> list[tuple[str, list[str], list[str]]]:
    """(part, strategies, singles) per job, in the row order of the sequential table; evidence last."""
    parts = ["diagnosis"] + (["survival"] if with_survival and cfg["survival_experiments"] else [])
    jobs = []
    for p in parts:
        jobs += [(p, [s], []) for s in cfg["strategies"]] + [(p, [], [m]) for m in cfg["single_modalities"]]
    return jobs + [("evidence", list(cfg["strategies"]), list(cfg["single_modalities"]))]


def run_fusion_experiments_parallel(frames: dict[str, pd.DataFrame], bags: dict[str, Any], labels: pd.Series,
                                    cfg: dict, survival: pd.DataFrame | None = None,
                                    workers: int = 2) -> dict[str, Any]:
    """``run_fusion_experiments`` over ``workers`` spawned processes (same output, same row order)."""
    jobs = fusion_jobs(cfg, survival is not None)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with torch threads running
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                             initargs=(frames, bags, labels, survival, cfg)) as pool:
        outs = list(pool.map(_job, *zip(*jobs)))
    tables = [o["experiments"] for o in outs[:-1] if len(o["experiments"])]
    evidence = outs[-1]
    oof = {k: v for o in outs[:-1] for k, v in o["oof"].items()}
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return {**evidence, "experiments": table, "oof": oof}
