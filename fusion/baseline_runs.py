"""The classical baseline of an experiment (CoxNet, logistic or ridge on all modalities + covariates, nested
CV for its regularisation): one fold, and cross-validated over the experiment's folds."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from fusion.baselines import coxnet_fit_predict, logistic_fit_predict, ridge_fit_predict
from fusion.experiment_data import ExperimentData, ExperimentOptions, ModelResult, Split
from fusion.folds import cross_validated
from fusion.survival_functions import SurvivalFn, cox_survival_fn

BASELINE_MODEL = {"survival": "coxnet", "classification": "logistic", "regression": "ridge"}


def baseline_matrix(data: ExperimentData, modalities: Sequence[str]) -> np.ndarray:
    """All ``modalities`` + covariates side by side [n_patients, d]; a bag modality enters as its per-patient
    mean instance (NaN where absent; imputed inside the baseline)."""
    frames = [data.bag_means(m) if m in (data.bags or {}) else data.features[m] for m in modalities]
    frames += [data.covariates] if data.covariates is not None else []
    return pd.concat(frames, axis=1).to_numpy(dtype=np.float64)


def baseline_fold(data: ExperimentData, tr: Sequence[str], va: Sequence[str], opts: ExperimentOptions,
                  x_all: np.ndarray) -> tuple[np.ndarray, SurvivalFn | None, dict]:
    """Fit the baseline on the patients ``tr`` (rows of ``x_all``, in ``data.patients`` order) and predict ``va``:
    (predictions: survival risk, P(class 1) for two classes else probabilities [n, K], regression value;
    survival function of ``va`` (survival only); tuned settings)."""
    pidx = pd.Index(data.patients)
    a, b = pidx.get_indexer(list(tr)), pidx.get_indexer(list(va))
    t = data.target
    if data.task == "survival":
        time_a, event_a = t["time"].to_numpy()[a], t["event"].to_numpy(bool)[a]
        # linear predictor of the training rows too: their Breslow baseline hazard gives S(t | x) for the IBS
        eta, info = coxnet_fit_predict(x_all[a], time_a, event_a, np.concatenate([x_all[a], x_all[b]]),
                                       max_features=None, seed=opts.seed, inner_folds=opts.coxnet_inner_folds,
                                       n_alphas=opts.coxnet_n_alphas, alpha_min_ratio=opts.coxnet_alpha_min_ratio)
        pred = eta[len(a):]
        return pred, cox_survival_fn(eta[:len(a)], time_a, event_a, pred), info
    if data.task == "classification":
        pred, info = logistic_fit_predict(x_all[a], t["label"].to_numpy(int)[a], x_all[b], len(data.classes or []),
                                          seed=opts.seed)
        return (pred[:, 1] if len(data.classes or []) == 2 else pred), None, info
    pred, info = ridge_fit_predict(x_all[a], t["value"].to_numpy(float)[a], x_all[b], seed=opts.seed)
    return pred, None, info


def run_baseline(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions,
                 modalities: Sequence[str]) -> ModelResult:
    """The classical baseline on all ``modalities`` + covariates, cross-validated on ``splits``."""
    x_all = baseline_matrix(data, modalities)
    name = BASELINE_MODEL[data.task]
    return cross_validated(f"baseline:{name}", "baseline", modalities, data, splits,
                           lambda tr, va: baseline_fold(data, tr, va, opts, x_all), name)
