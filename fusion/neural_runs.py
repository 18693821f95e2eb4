"""One neural model cross-validated over an experiment's folds (with optional inner-CV modality selection),
scored on every patient and, for single modalities, on the patients having the modality."""

from __future__ import annotations


from typing import Sequence

import numpy as np
import pandas as pd

from fusion.errors import FusionDataError
from fusion.robustness import robustness_curve
from fusion.task_metrics import PRIMARY_METRIC
from fusion.train import cpu_threads
from fusion.experiment_data import ExperimentData, ExperimentOptions, ModelResult, Split
from fusion.folds import _oof_frame, score_fold, survival_fn_of
from fusion.selection import select_subset
from fusion.tuning import fit_predict_tuned, strategy_options


def _model_name(strategy: str, modalities: Sequence[str], head: str | None, select: bool = False) -> str:
    suffix = "" if head in (None, "cox") else "/" + head
    if strategy == "single":
        return f"single:{modalities[0]}{suffix}"
    return f"fusion:{strategy}{'+select' if select else ''}{suffix}"


def run_neural(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions, strategy: str,
               modalities: Sequence[str], head: str | None, select: bool = False) -> ModelResult:
    """Cross-validate one FusionModel (``strategy`` over ``modalities``, survival ``head``) on ``splits``.

    ``select``: in every outer fold, an inner CV on the training part picks the modality subset
    (fusion.selection.candidate_subsets) before the final fit, so an uninformative modality can be left out.
    A strategy with an option grid (fusion.tuning, e.g. 'bilinear'; early, late, attention and kronecker with
    ``opts.tune``) has its options chosen by inner CV on each outer training fold too (``extra['tuned']``: per
    fold, the chosen options and every candidate's inner mean), a chosen one-modality subset included.
    """
    metric = PRIMARY_METRIC[data.task]
    fold_metrics, oofs, curves, chosen, options = [], [], [], [], []
    for k, (tr, va) in enumerate(splits):
        seed = opts.seed + 1000 * k
        mods, strat = list(modalities), strategy
        if select:
            mods, inner = select_subset(data, tr, strategy_options(opts, strategy), strategy, modalities, head, seed)
            strat = strategy if len(mods) > 1 else "single"
            chosen.append({"modalities": mods, "inner": inner})
        # a subset of one modality is fitted as 'single' with the strategy's own options and grid (as selected)
        pred, model, ds, b, tuned = fit_predict_tuned(data, tr, va, opts, strat, mods, head, seed, grid_of=strategy)
        if tuned:
            options.append(tuned)
        if opts.robustness and len(modalities) > 1 and len(mods) == len(modalities):
            with cpu_threads(opts.num_threads):
                curves.append(robustness_curve(model, ds, b, lambda p: score_fold(data, tr, va, p)[metric]))
        surv_fn = survival_fn_of(data, tr, opts, model, ds, b, pred) if data.task == "survival" else None
        fold_metrics.append(score_fold(data, tr, va, pred, surv_fn))
        if strategy == "single":
            fold_metrics[-1][f"{metric}_present"] = _score_present(data, tr, va, pred, modalities[0], metric,
                                                                   fold_metrics[-1][metric])
        oofs.append(_oof_frame(va, k, pred))
    extra: dict = _summarise_curves(curves) if curves and len(curves) == len(splits) else {}
    if select:
        extra["tuned"] = chosen
    if options:  # a strategy with an option grid: per fold, the options its inner CV chose
        extra["tuned"] = [{**c, **o} for c, o in zip(chosen, options)] if select and len(chosen) == len(options) \
            else options
    return ModelResult(_model_name(strategy, modalities, head, select), strategy, list(modalities),
                       head if data.task == "survival" else None, metric, [m[metric] for m in fold_metrics],
                       fold_metrics, pd.concat(oofs, ignore_index=True), extra)


def _score_present(data: ExperimentData, tr: Sequence[str], va: Sequence[str], pred: np.ndarray, modality: str,
                   metric: str, all_patients: float) -> float:
    """A single-modality model's metric over the validation patients that have the modality (the primary
    metric scores every patient, those lacking it at the training prior, so that all models compare on the
    same patients); NaN when those patients cannot be scored (e.g. one class only)."""
    have = data.has_modality(modality, va)
    if have.all():
        return float(all_patients)  # every validation patient has it: the fold's metric itself
    if have.sum() < 3:
        return float("nan")
    try:
        return float(score_fold(data, tr, [p for p, h in zip(va, have) if h], np.asarray(pred)[have])[metric])
    except (FusionDataError, ValueError):
        return float("nan")


def _summarise_curves(curves: list[dict]) -> dict:
    """Mean over folds of the robustness curve {fraction dropped: metric} and of drop-one contributions."""
    fracs = sorted(curves[0]["curve"])
    rob = {str(f): float(np.mean([c["curve"][f] for c in curves])) for f in fracs}
    mods = list(curves[0]["contributions"])
    contrib = {m: float(np.mean([c["contributions"][m] for c in curves])) for m in mods}
    return {"robustness": rob, "contributions": contrib}
