"""The experiment engine: every model of a spec (baseline, each single modality, each fusion strategy,
each survival head) cross-validated on the SAME folds, with per-fold preprocessing fitted on the
training fold only. Inputs are patient-indexed feature frames; ``flows`` builds them from a spec.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from fusion.baselines import coxnet_fit_predict, logistic_fit_predict, ridge_fit_predict
from fusion.errors import FusionConfigError, FusionDataError
from fusion.strategies import get_strategy
from fusion.survival_functions import cox_survival_fn
from fusion.task_metrics import PRIMARY_METRIC
from fusion.experiment_data import (  # noqa: F401 (re-exported: the engine's public names)
    EXPERTS,
    HEADS,
    TASK_KINDS,
    ExperimentData,
    ExperimentOptions,
    ModelResult,
    Split,
)
from fusion.experiment_pool import run_models
from fusion.experts import run_experts
from fusion.folds import _oof_frame, fit_predict_fold, fold_dataset, score_fold, survival_fn_of  # noqa: F401
from fusion.neural_runs import run_neural  # noqa: F401 (re-exported)


def run_baseline(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions,
                 modalities: Sequence[str]) -> ModelResult:
    """The classical baseline on all ``modalities`` + covariates: CoxNet, logistic or ridge (nested CV).

    A bag modality enters as its per-patient mean instance (NaN where absent; imputed inside the baseline).
    """
    frames = [data.bag_means(m) if m in (data.bags or {}) else data.features[m] for m in modalities]
    frames += [data.covariates] if data.covariates is not None else []
    x_all = pd.concat(frames, axis=1).to_numpy(dtype=np.float64)
    pidx = pd.Index(data.patients)
    fold_metrics, oofs, infos = [], [], []
    for k, (tr, va) in enumerate(splits):
        a, b = pidx.get_indexer(tr), pidx.get_indexer(va)
        t = data.target
        surv_fn = None
        if data.task == "survival":
            time_a, event_a = t["time"].to_numpy()[a], t["event"].to_numpy(bool)[a]
            # linear predictor of the training rows too: their Breslow baseline hazard gives S(t | x) for the IBS
            eta, info = coxnet_fit_predict(x_all[a], time_a, event_a, np.concatenate([x_all[a], x_all[b]]),
                                           max_features=None, seed=opts.seed, inner_folds=opts.coxnet_inner_folds,
                                           n_alphas=opts.coxnet_n_alphas, alpha_min_ratio=opts.coxnet_alpha_min_ratio)
            pred = eta[len(a):]
            surv_fn = cox_survival_fn(eta[:len(a)], time_a, event_a, pred)
        elif data.task == "classification":
            pred, info = logistic_fit_predict(x_all[a], t["label"].to_numpy(int)[a], x_all[b], len(data.classes or []),
                                              seed=opts.seed)
            if len(data.classes or []) == 2:
                pred = pred[:, 1]
        else:
            pred, info = ridge_fit_predict(x_all[a], t["value"].to_numpy(float)[a], x_all[b], seed=opts.seed)
        fold_metrics.append(score_fold(data, tr, va, pred, surv_fn))
        oofs.append(_oof_frame(va, k, pred))
        infos.append(info)
    name = {"survival": "coxnet", "classification": "logistic", "regression": "ridge"}[data.task]
    metric = PRIMARY_METRIC[data.task]
    return ModelResult(f"baseline:{name}", "baseline", list(modalities), None, metric,
                       [m[metric] for m in fold_metrics], fold_metrics, pd.concat(oofs, ignore_index=True),
                       {"tuned": infos, "model": name})


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
    and there are at least 2 modalities), singles, neural fusions (per head).

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
    return results + run_models(data, splits, opts, model_plan(data, opts), workers, report)


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
