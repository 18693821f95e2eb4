"""Late fusion of separately fitted classical experts (the ``experts`` strategy; not a neural model).

One expert per modality (and one for the covariates, when the experiment has any): the modality's own
per-fold preprocessing (``FoldPreprocessor``: median imputation, variance screening, z-scoring and PCA to
``ExperimentOptions.experts_components``, fitted on the training patients having the modality), then the
task's classical model from ``fusion.baselines`` with its own regularisation chosen by inner CV on the
training fold (CoxNet alpha, logistic C, ridge alpha). A patient lacking a modality gets that expert's
training-mean score. Survival experts whose inner-CV c-index on the training fold is at or below chance are
left out of that fold. Combination:

- survival: mean over experts of the risk z-scored with the training fold's predictions (a missing
  expert contributes 0, its training mean); survival functions for the IBS come from a one-slope Cox
  fit of the combined score on the training fold (Breslow baseline);
- classification: mean over experts of per-class log-probabilities, renormalised with a softmax
  (logistic log-probabilities share one calibrated scale, so they are averaged as they are);
- regression: mean of the experts' predictions (on the target's scale).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from fusion.baselines import (
    _surv_y,
    coxnet_fit_predict,
    logistic_fit_predict,
    ridge_fit_predict,
)
from fusion.errors import FusionDataError
from fusion.experiment_data import (
    EXPERTS,
    ExperimentData,
    ExperimentOptions,
    ModelResult,
    Split,
)
from fusion.folds import cross_validated
from fusion.preprocess import FoldPreprocessor
from fusion.survival_functions import SurvivalFn, cox_survival_fn

MIN_TRAIN_ROWS = 10  # an expert needs this many training patients having its modality


def _expert_inputs(data: ExperimentData, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """Expert name -> its raw feature matrix [n_patients, d] (NaN row = absent); bags enter as their mean
    instance; covariates (if any) form one more expert."""
    out = {m: (data.bag_means(m) if m in (data.bags or {}) else data.features[m]).to_numpy(np.float64)
           for m in modalities}
    if data.covariates is not None and data.covariates.shape[1]:
        out["covariates"] = data.covariates.to_numpy(np.float64)
    return out


def _fit_expert(data: ExperimentData, x_tr: np.ndarray, t_tr: pd.DataFrame, x_te: np.ndarray,
                opts: ExperimentOptions) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """One expert's scores on its training rows and on ``x_te`` (preprocessed inputs), with its tuned settings;
    None when the training rows cannot support the inner CV (too few rows, events or classes).

    Scores: survival risk [n]; classification log-probabilities [n, K]; regression prediction [n].
    """
    both = np.concatenate([x_tr, x_te])
    n = len(x_tr)
    if data.task == "survival":
        time, event = t_tr["time"].to_numpy(float), t_tr["event"].to_numpy(bool)
        if min(event.sum(), (~event).sum()) < opts.coxnet_inner_folds:
            return None
        eta, info = coxnet_fit_predict(x_tr, time, event, both, max_features=None, seed=opts.seed,
                                       inner_folds=opts.coxnet_inner_folds, n_alphas=opts.coxnet_n_alphas,
                                       alpha_min_ratio=opts.coxnet_alpha_min_ratio)
        return eta[:n], eta[n:], info
    if data.task == "classification":
        y = t_tr["label"].to_numpy(int)
        k = len(data.classes or [])
        if np.unique(y).size < 2:
            return None
        p, info = logistic_fit_predict(x_tr, y, both, k, seed=opts.seed)
        logp = np.log(np.clip(p, 1e-9, 1.0))
        return logp[:n], logp[n:], info
    pred, info = ridge_fit_predict(x_tr, t_tr["value"].to_numpy(float), both, seed=opts.seed)
    return pred[:n], pred[n:], info


def experts_fold(data: ExperimentData, tr: Sequence[str], va: Sequence[str], opts: ExperimentOptions,
                 modalities: Sequence[str]) -> tuple[np.ndarray, SurvivalFn | None, dict]:
    """Fit every expert on the training patients ``tr``, combine their scores for ``va``.

    Returns (predictions for ``va``: survival risk [n_va], classification P(class 1) [n_va] for two classes
    else probabilities [n_va, K], regression [n_va]; survival function of ``va`` (survival only);
    {expert: tuned settings incl. ``n_components`` and ``n_train``, or {'skipped': reason}}).
    Raises FusionDataError when no expert can be fitted in this fold.
    """
    pidx = pd.Index(data.patients)
    a, b = pidx.get_indexer(list(tr)), pidx.get_indexer(list(va))
    t_tr = data.target.iloc[a]
    scores_tr, scores_va, settings = [], [], {}
    for name, x in _expert_inputs(data, modalities).items():
        has_a, has_b = ~np.isnan(x[a]).all(axis=1), ~np.isnan(x[b]).all(axis=1)
        if has_a.sum() < MIN_TRAIN_ROWS:
            settings[name] = {"skipped": f"{int(has_a.sum())} training patients have it (< {MIN_TRAIN_ROWS})"}
            continue
        comps = None if name == "covariates" else opts.experts_components
        pre = FoldPreprocessor(opts.max_features, comps, opts.seed).fit(x[a][has_a])
        fitted = _fit_expert(data, pre.transform(x[a][has_a]), t_tr[has_a], pre.transform(x[b][has_b]), opts)
        if fitted is None:
            settings[name] = {"skipped": "too few events or classes among its training patients"}
            continue
        s_tr, s_va, info = fitted
        mu = s_tr.mean(axis=0)
        sd = s_tr.std(axis=0) if data.task == "survival" else np.ones_like(mu)
        sd = np.where(sd > 1e-12, sd, 1.0)
        full_tr = np.broadcast_to(mu, (len(a),) + mu.shape).copy()  # absent: the expert's training mean
        full_va = np.broadcast_to(mu, (len(b),) + mu.shape).copy()
        full_tr[has_a], full_va[has_b] = s_tr, s_va
        scores_tr.append((full_tr - mu) / sd if data.task == "survival" else full_tr)
        scores_va.append((full_va - mu) / sd if data.task == "survival" else full_va)
        settings[name] = {**info, "n_components": pre.n_out, "n_train": int(has_a.sum())}
    if not scores_va:
        raise FusionDataError(f"experts: no expert could be fitted in this fold ({settings})")
    scores_tr, scores_va = _drop_chance_experts(data, scores_tr, scores_va, settings)
    comb_tr, comb_va = np.mean(scores_tr, axis=0), np.mean(scores_va, axis=0)
    if data.task == "survival":
        return comb_va, _calibrated_survival_fn(comb_tr, t_tr, comb_va), settings
    if data.task == "classification":
        p = softmax(comb_va, axis=1)
        return (p[:, 1] if p.shape[1] == 2 else p), None, settings
    return comb_va, None, settings


def _drop_chance_experts(data: ExperimentData, scores_tr: list, scores_va: list, settings: dict
                         ) -> tuple[list, list]:
    """Survival: leave out the experts whose inner-CV c-index on the training fold is at or below chance (0.5),
    so that an uninformative modality does not dilute the others; the best one stays when all are. Marked
    ``dropped`` in the fold's settings. Training-fold information only."""
    if data.task != "survival":
        return scores_tr, scores_va
    fitted = [name for name, info in settings.items() if "skipped" not in info]
    inner = [float(settings[n].get("inner_c_index", 1.0)) for n in fitted]
    keep = [i for i, c in enumerate(inner) if c > 0.5] or [int(np.argmax(inner))]
    for i, name in enumerate(fitted):
        if i not in keep:
            settings[name]["dropped"] = f"inner-CV c-index {inner[i]:.3f} <= 0.5"
    return [scores_tr[i] for i in keep], [scores_va[i] for i in keep]


def _calibrated_survival_fn(score_tr: np.ndarray, t_tr: pd.DataFrame, score_va: np.ndarray) -> SurvivalFn:
    """S(t | x) of the validation patients: the combined score scaled by a one-covariate Cox slope fitted on
    the training fold (the mean of z-scores is not a log-hazard), Breslow baseline on the training fold."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    time, event = t_tr["time"].to_numpy(float), t_tr["event"].to_numpy(bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slope = float(CoxPHSurvivalAnalysis(alpha=1e-4).fit(score_tr[:, None], _surv_y(time, event)).coef_[0])
    return cox_survival_fn(slope * score_tr, time, event, slope * score_va)


def run_experts(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions,
                modalities: Sequence[str]) -> ModelResult:
    """Cross-validate the experts late fusion over ``modalities`` on ``splits``: the row ``fusion:experts``.

    ``extra['tuned']``: per fold, {expert: {alpha or C, n_components, n_train, ...}}.
    """
    return cross_validated(f"fusion:{EXPERTS}", EXPERTS, modalities, data, splits,
                           lambda tr, va: experts_fold(data, tr, va, opts, modalities), EXPERTS)
