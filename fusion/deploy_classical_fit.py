"""The refit of a classical row for deployment (fusion.deploy_classical holds the model it gives).

The regularisation is chosen exactly as the engine chooses it on a training fold (the inner CV of
``fusion.baselines.logistic_fit_predict`` / ``coxnet_fit_predict``; ``fusion.experts.experts_fold`` with every
patient as its training and prediction set), the final fit is repeated with the same recipe to keep its
coefficients, and those are checked against the engine's own predictions for every patient (drift guard).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd

from fusion.deploy_classical import BASELINE, CLASSICAL, DeployedClassical, LinearPart
from fusion.deploy_preprocess import FrozenPreprocessing, raw_inputs
from fusion.errors import FusionDataError
from fusion.experiment_data import ExperimentData, ExperimentOptions
from fusion.preprocess import FoldPreprocessor

DRIFT_TOL = 1e-5  # the refit's predictions vs the engine's (float32 features inside the logistic models)


def _frozen(pre: FoldPreprocessor) -> FrozenPreprocessing:
    return FrozenPreprocessing.of("flat", pre)


def _logistic_part(name: str, mods: list[str], x: np.ndarray, y: np.ndarray, c: float,
                   before: list[FrozenPreprocessing]) -> LinearPart:
    """fusion.baselines.logistic_fit_predict's final fit (its preprocessing + L2 logistic with C = ``c``)."""
    from sklearn.linear_model import LogisticRegression

    pre = FoldPreprocessor(max_features=None, n_components=None).fit(x)
    m = LogisticRegression(C=c, max_iter=2000).fit(pre.transform(x), y)
    return LinearPart(name, mods, before + [_frozen(pre)], m.coef_.copy(), m.intercept_.copy(),
                      class_ids=np.asarray(m.classes_, dtype=np.int64), settings={"C": float(c)})


def _coxnet_part(name: str, mods: list[str], x: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float,
                 opts: ExperimentOptions, before: list[FrozenPreprocessing]) -> LinearPart:
    """fusion.baselines.coxnet_fit_predict's final fit (same preprocessing, alpha path and l1 ratio), the
    coefficients and offset at the chosen ``alpha``."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    from fusion.baselines import _surv_y, coxnet_fit_predict

    l1 = inspect.signature(coxnet_fit_predict).parameters["l1_ratio"].default
    pre = FoldPreprocessor(max_features=None, n_components=None).fit(x)
    m = CoxnetSurvivalAnalysis(l1_ratio=l1, n_alphas=opts.coxnet_n_alphas, alpha_min_ratio=opts.coxnet_alpha_min_ratio,
                               max_iter=100000, fit_baseline_model=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(pre.transform(x).astype(np.float64), _surv_y(time, event))
    j = int(np.argmin(np.abs(m.alphas_ - alpha)))
    return LinearPart(name, mods, before + [_frozen(pre)], m.coef_[:, j][None, :].astype(np.float64),
                      np.array([-float(m.offset_[j])]), settings={"alpha": float(alpha)})


def _baseline_parts(data: ExperimentData, mods: list[str], opts: ExperimentOptions) -> tuple[list[LinearPart], np.ndarray]:
    from fusion.baseline_runs import baseline_matrix
    from fusion.baselines import coxnet_fit_predict, logistic_fit_predict

    x, t = baseline_matrix(data, mods), data.target
    if data.task == "classification":
        y = t["label"].to_numpy(int)
        ref, info = logistic_fit_predict(x, y, x, len(data.classes or []), seed=opts.seed)
        return [_logistic_part(BASELINE, mods, x, y, info["C"], [])], ref
    time, event = t["time"].to_numpy(float), t["event"].to_numpy(bool)
    ref, info = coxnet_fit_predict(x, time, event, x, max_features=None, seed=opts.seed,
                                   inner_folds=opts.coxnet_inner_folds, n_alphas=opts.coxnet_n_alphas,
                                   alpha_min_ratio=opts.coxnet_alpha_min_ratio)
    return [_coxnet_part(BASELINE, mods, x, time, event, info["alpha"], opts, [])], ref


def _expert_parts(data: ExperimentData, mods: list[str], opts: ExperimentOptions) -> tuple[list[LinearPart], np.ndarray]:
    """Every expert fusion.experts fits (a modality's own, and for survival the joint one over every modality),
    each with its own preprocessing (``expert_preprocessor``) and tuned regularisation of the engine's fold
    with every patient as training and prediction set."""
    from fusion.experts import _expert_inputs, expert_modalities, expert_preprocessor, experts_fold

    pats = list(data.patients)
    ref, _, settings = experts_fold(data, pats, pats, opts, mods)
    parts = []
    for name, x in _expert_inputs(data, mods).items():
        s = settings.get(name, {})
        if "skipped" in s or "dropped" in s:
            continue
        has = ~np.isnan(x).all(axis=1)
        pre = expert_preprocessor(name, opts).fit(x[has])
        xt, t = pre.transform(x[has]), data.target.iloc[np.flatnonzero(has)]
        reads = expert_modalities(name, mods)
        if data.task == "classification":
            part = _logistic_part(name, reads, xt, t["label"].to_numpy(int), s["C"], [_frozen(pre)])
            scores = np.log(np.clip(part.proba(x[has], len(data.classes or [])), 1e-9, 1.0))
            part.fill = scores.mean(axis=0)
        else:
            part = _coxnet_part(name, reads, xt, t["time"].to_numpy(float), t["event"].to_numpy(bool), s["alpha"],
                                opts, [_frozen(pre)])
            eta = part.scores(x[has])[:, 0]
            sd = float(eta.std())
            part.mu, part.sd = np.array(float(eta.mean())), np.array(sd if sd > 1e-12 else 1.0)
            part.fill = part.mu
        part.settings.update({"n_train": int(has.sum()), "n_components": int(pre.n_out)})
        parts.append(part)
    if data.task == "survival":  # the fold's stacking weights (summing to 1 over the kept experts)
        w = np.array([float(settings[p.name].get("weight", 1.0)) for p in parts])
        for p, we in zip(parts, w / w.sum()):
            p.settings["weight"] = float(we)
    return parts, ref


def fit_classical(data: ExperimentData, strategy: str, mods: list[str], opts: ExperimentOptions
                  ) -> tuple[list[LinearPart], dict]:
    """The classical row (``strategy`` baseline | experts over ``mods``) refit on every patient of ``data``:
    (its parts, info: input dims, feature names, bag modalities, the parts' settings, reference_drift).

    FusionDataError when the refit's predictions differ from the engine's function's by more than 1e-5."""
    if strategy not in CLASSICAL:
        raise FusionDataError(f"fit_classical: strategy '{strategy}' is not classical ({list(CLASSICAL)})")
    parts, ref = (_baseline_parts if strategy == BASELINE else _expert_parts)(data, mods, opts)
    if not parts:
        raise FusionDataError(f"deploy: no {strategy} part could be fitted on {mods}")
    bags = [m for m in mods if m in (data.bags or {})]
    info = {"input_dims": {m: int((data.bag_means(m) if m in bags else data.features[m]).shape[1]) for m in mods},
            "feature_names": {m: [str(c) for c in data.features[m].columns] for m in mods if m not in bags},
            "bag_modalities": bags,
            "parts": [{"name": p.name, "modalities": p.modalities, "settings": p.settings} for p in parts]}
    dm = DeployedClassical("diagnosis" if data.task == "classification" else "survival", strategy, list(mods), None,
                           list(data.classes) if data.classes else None, 1.0, "", parts, {}, 0, info)
    got = dm.raw_predict(dm.dataset(raw_inputs(data, mods)))
    ds_pats = dm.dataset(raw_inputs(data, mods)).patients
    order = pd.Index(data.patients).get_indexer(ds_pats)
    want = np.asarray(ref)
    want = want[:, 1] if want.ndim == 2 and got.ndim == 1 else want
    drift = float(np.abs(got - want[order]).max())
    if drift > DRIFT_TOL:
        raise FusionDataError(f"deploy: the refit {strategy} model differs from the engine's by {drift:.2e}")
    info["reference_drift"] = drift
    return parts, info
