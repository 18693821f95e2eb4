"""The experiment engine: every model of a spec (baseline, each single modality, each fusion strategy,
each survival head) cross-validated on the SAME folds, with per-fold preprocessing fitted on the
training fold only. Inputs are patient-indexed feature frames; ``flows`` builds them from a spec.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fusion.baseline_runs import run_baseline  # noqa: F401 (re-exported)
from fusion.errors import FusionConfigError, FusionDataError
from fusion.strategies import get_strategy
from fusion.experiment_data import (  # noqa: F401 (re-exported: the engine's public names)
    EXPERTS,
    HEADS,
    TASK_KINDS,
    ExperimentData,
    ExperimentOptions,
    ModelResult,
    Split,
)
from fusion.experiment_pool import run_models, run_pool
from fusion.nested import best_rows, inner_scores
from fusion.experts import run_experts
from fusion.folds import _oof_frame, fit_predict_fold, fold_dataset, score_fold, survival_fn_of  # noqa: F401
from fusion.neural_runs import run_neural  # noqa: F401 (re-exported)


def model_plan(data: ExperimentData, opts: ExperimentOptions) -> list[tuple[str, list[str], str | None, bool]]:
    """(strategy, modalities, head, select) of every neural model: each single modality, each fusion strategy,
    then each strategy in ``opts.select`` with inner-CV modality selection."""
    mods = [m for m in data.modality_names if opts.modality_filter is None or m in opts.modality_filter]
    heads = list(opts.heads) if data.task == "survival" else [None]
    plan = []
    for h in heads:
        if opts.singles:
            plan += [("single", [m], h, False) for m in mods if opts.singles is True or m in opts.singles]
        if len(mods) > 1:
            plan += [(s, mods, h, False) for s in opts.strategies if s != EXPERTS]
            plan += [(s, mods, h, True) for s in opts.select]
    return plan


def check_instance_strategies(data: ExperimentData, opts: ExperimentOptions) -> None:
    """FusionConfigError naming ``strategies`` when an instance-level strategy (coattention) lacks a bag or a
    flat modality among the experiment's (filtered) modalities."""
    mods = [m for m in data.modality_names if opts.modality_filter is None or m in opts.modality_filter]
    bags = [m for m in mods if m in (data.bags or {})]
    for s in (s for s in opts.strategies if s != EXPERTS):
        if getattr(get_strategy(s), "instance_level", False) and (not bags or len(bags) == len(mods)):
            raise FusionConfigError(f"strategies: '{s}' needs at least one bag modality (instance bags, e.g. slide "
                                    f"tiles) and one flat modality; found bag modalities {bags} among {mods}")


def run_experiment(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions | None = None,
                   progress: Callable[[str], None] | None = None, workers: int = 1) -> list[ModelResult]:
    """Every model of the experiment on the same ``splits``: baseline, experts (when in ``opts.strategies``
    and there are at least 2 modalities), singles, neural fusions (per head), then with ``opts.best`` the
    nested-selection rows ``best`` and ``best:single`` (fusion.nested).

    ``workers`` > 1 trains the neural models on that many spawned processes (same results).
    """
    opts = opts or ExperimentOptions()
    if len(splits) < 2:
        raise FusionConfigError(f"splits: need at least 2 folds, found {len(splits)}")
    say = progress or (lambda s: None)
    check_instance_strategies(data, opts)

    def report(r: ModelResult) -> None:
        say(f"{r.name}: {r.metric} {r.mean:.3f} +- {r.std:.3f}")

    mods = [m for m in data.modality_names if opts.modality_filter is None or m in opts.modality_filter]
    results = []
    if opts.baseline:
        results.append(run_baseline(data, splits, opts, mods))
        report(results[-1])
    if EXPERTS in opts.strategies and len(mods) > 1:
        results.append(run_experts(data, splits, opts, mods))
        report(results[-1])
    results += run_models(data, splits, opts, model_plan(data, opts), workers, report)
    if opts.best:
        rows = best_rows(data, splits, opts, results, lambda cands: run_pool(
            data, splits, opts, inner_scores, cands, workers, lambda c: _inner_cost(data, c)), opts.best_candidates)
        for r in rows:
            report(r)
        results += rows
    return results


def _inner_cost(data: ExperimentData, cand) -> float:
    """Relative cost of a candidate's inner CV (longest-first scheduling): neural fits with slide bags dearest."""
    if cand.kind != "neural":
        return 1.0
    return 2.0 + 0.5 * len(cand.modalities) + 3.0 * len(set(data.bags or {}) & set(cand.modalities))


def paired_gain(result: ModelResult | Sequence[float], best_single: ModelResult | Sequence[float]) -> tuple[float, float]:
    """Paired per-fold gain of a model over the best single modality: (mean of the fold differences, its
    standard error sd / sqrt(n_folds), sd with ddof=1; NaN for a single fold).

    Both arguments: a ModelResult or its per-fold primary metrics, on the same folds in the same order.
    Raises FusionDataError when the fold counts differ or are zero.
    """
    a = np.asarray(result.folds if isinstance(result, ModelResult) else result, dtype=np.float64)
    b = np.asarray(best_single.folds if isinstance(best_single, ModelResult) else best_single, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise FusionDataError(f"paired_gain: need the same non-zero number of folds, found {a.size} and {b.size}")
    d = a - b
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se
