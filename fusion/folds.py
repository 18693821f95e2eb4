"""One fold of an experiment: the fold's dataset (preprocessing fitted on its training part), one model's fit
and validation predictions, its scores and survival functions."""

from __future__ import annotations


from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from fusion.bags import fold_bags
from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionDataError
from fusion.model import FusionModel
from fusion.preprocess import FoldPreprocessor
from fusion.survival_functions import SurvivalFn, cox_survival_fn, nll_survival_fn
from fusion.survival_heads import time_bin_edges, to_bins
from fusion.task_metrics import classification_metrics, regression_metrics, survival_metrics
from fusion.train import TrainConfig, cpu_threads, fit, predict, seeded
from fusion.experiment_data import HEADS, ExperimentData, ExperimentOptions


def fold_dataset(data: ExperimentData, train: Sequence[str], val: Sequence[str], opts: ExperimentOptions,
                 modalities: Sequence[str]) -> tuple[MultimodalDataset, np.ndarray, np.ndarray]:
    """Preprocessed dataset of the fold's patients (train rows first); preprocessing fitted on train only.

    Covariates (z-scored with the training statistics) are appended to every flat modality's features,
    never to bag instances (so a bag-only model sees no covariates; the baseline and flat models do).
    Bag instances are z-scored (and PCA'd to ``opts.bag_components``) with statistics of the training
    patients' instances only (at most ``opts.bag_fit_instances`` of them, drawn at random) and stay ragged.
    Returns (dataset without labels, train positions, val positions).
    """
    pats = list(train) + list(val)
    pos = pd.Index(data.patients).get_indexer(pats)
    n_tr = len(train)
    cov = None
    if data.covariates is not None and data.covariates.shape[1]:
        c = FoldPreprocessor(max_features=None, n_components=None).fit(data.covariates.iloc[pos[:n_tr]].to_numpy(float))
        cov = c.transform(data.covariates.iloc[pos].to_numpy(float))
    mods = {}
    for name in modalities:
        if name in (data.bags or {}):
            mods[name] = fold_bags(name, data.bags[name], pats, n_tr, opts.bag_components, opts.bag_fit_instances,
                                   opts.seed)
            continue
        x = data.features[name].iloc[pos].to_numpy(dtype=np.float64)
        present = ~np.isnan(x).all(axis=1)
        tr_rows = np.flatnonzero(present[:n_tr])
        if tr_rows.size < 2:
            raise FusionDataError(f"modality '{name}': fewer than 2 training patients have it in this fold")
        pre = FoldPreprocessor(opts.max_features, opts.n_components, opts.seed).fit(x[tr_rows])
        z = pre.transform(x)
        if cov is not None:
            z = np.concatenate([z, cov], axis=1).astype(np.float32)
        z[~present] = 0.0
        mods[name] = ModalityData(name, torch.from_numpy(np.ascontiguousarray(z)), torch.from_numpy(present))
    ds = MultimodalDataset(patients=pats, modalities=mods)
    return ds, np.arange(n_tr), np.arange(n_tr, len(pats))


def _fold_labels(data: ExperimentData, pats: list[str], n_tr: int, task: str, opts: ExperimentOptions):
    """(torch task name, y for the fold dataset, n_outputs)."""
    t = data.target.loc[pats]
    if data.task == "survival":
        time, event = t["time"].to_numpy(np.float32), t["event"].to_numpy(bool)
        if task == "survival_nll":
            edges = time_bin_edges(time[:n_tr], event[:n_tr], opts.n_bins)
            return task, (to_bins(time, edges).astype(np.float32), event), len(edges) + 1
        return task, (time, event), 1
    if data.task == "classification":
        k = len(data.classes or [])
        return ("binary" if k == 2 else "multiclass"), t["label"].to_numpy(np.int64), (1 if k == 2 else k)
    return "regression", t["value"].to_numpy(np.float32), 1


def score_fold(data: ExperimentData, train: Sequence[str], val: Sequence[str], pred: np.ndarray,
               survival_fn: SurvivalFn | None = None) -> dict[str, float]:
    """Every metric of the task for validation predictions ``pred`` of the patients ``val``.

    ``survival_fn`` (survival only): times -> S(t) [n_val, T]; adds ``ibs`` and the Kaplan-Meier ``ibs_km``.
    """
    tv = data.target.loc[list(val)]
    if data.task == "survival":
        tt = data.target.loc[list(train)]
        return survival_metrics(tv["time"].to_numpy(), tv["event"].to_numpy(bool), pred,
                                tt["time"].to_numpy(), tt["event"].to_numpy(bool), survival_fn)
    if data.task == "classification":
        return classification_metrics(tv["label"].to_numpy(int), pred, len(data.classes or []))
    return regression_metrics(tv["value"].to_numpy(float), pred)


def _oof_frame(val: Sequence[str], fold: int, pred: np.ndarray) -> pd.DataFrame:
    p = np.asarray(pred, dtype=np.float64)
    cols = ["prediction"] if p.ndim == 1 else [f"p_{c}" for c in range(p.shape[1])]
    df = pd.DataFrame(p.reshape(len(val), -1), columns=cols)
    df.insert(0, "fold", fold)
    df.insert(0, "patient", list(val))
    return df


def cross_validated(name: str, strategy: str, modalities: Sequence[str], data: ExperimentData,
                    splits: Sequence[tuple[list[str], list[str]]], fold_fn, model: str):
    """A classical model's ModelResult over ``splits``: ``fold_fn(train, val) -> (predictions for val, survival
    function or None, tuned settings)`` per fold, scored with ``score_fold``; ``extra``: {'tuned': per fold, 'model'}."""
    from fusion.experiment_data import ModelResult
    from fusion.task_metrics import PRIMARY_METRIC

    metric = PRIMARY_METRIC[data.task]
    fold_metrics, oofs, tuned = [], [], []
    for k, (tr, va) in enumerate(splits):
        pred, surv_fn, info = fold_fn(tr, va)
        fold_metrics.append(score_fold(data, tr, va, pred, surv_fn))
        oofs.append(_oof_frame(va, k, pred))
        tuned.append(info)
    return ModelResult(name, strategy, list(modalities), None, metric, [m[metric] for m in fold_metrics],
                       fold_metrics, pd.concat(oofs, ignore_index=True), {"tuned": tuned, "model": model})


def fit_predict_fold(data: ExperimentData, tr: Sequence[str], va: Sequence[str], opts: ExperimentOptions,
                     strategy: str, modalities: Sequence[str], head: str | None, seed: int):
    """Train one FusionModel on ``tr`` (preprocessing fitted there) and predict ``va``.

    Returns (predictions for ``va``, model, fold dataset, positions of ``va`` in it).
    """
    task = HEADS[head] if data.task == "survival" else None
    ds, a, b = fold_dataset(data, tr, va, opts, modalities)
    torch_task, y, n_out = _fold_labels(data, ds.patients, len(a), task, opts)
    ds = MultimodalDataset(patients=ds.patients, modalities=ds.modalities, y=y)
    lr = opts.nll_lr if head == "nll" else opts.lr
    has_bag = any(m in (data.bags or {}) for m in modalities)
    cfg = TrainConfig(epochs=opts.epochs, lr=lr, weight_decay=opts.weight_decay, seed=seed,
                      modality_dropout=opts.modality_dropout if len(modalities) > 1 else 0.0,
                      num_threads=opts.num_threads, batch_size=opts.bag_batch_size if has_bag else None,
                      max_instances=opts.bag_train_instances, early_stopping=opts.early_stopping)
    factories = {m: f for m, f in (opts.encoder_factories or {}).items() if m in modalities}
    with seeded(seed):
        model = FusionModel.for_dataset(ds, list(modalities), strategy, n_out, task=torch_task,
                                        embed_dim=opts.embed_dim, hidden=opts.hidden, dropout=opts.dropout,
                                        modality_dropout=cfg.modality_dropout, encoder_factories=factories)
    fit(model, ds, a, cfg)
    with cpu_threads(opts.num_threads):
        pred = predict(model, ds, b)
    return pred, model, ds, b


def survival_fn_of(data: ExperimentData, tr: Sequence[str], opts: ExperimentOptions, model: FusionModel,
                   ds: MultimodalDataset, b: np.ndarray, pred: np.ndarray) -> SurvivalFn:
    """times -> S(t) [len(b), T] of a trained survival FusionModel for the fold rows ``b`` (train rows first).

    Cox head: Breslow on the training rows' predicted log-hazards. NLL head: the hazards of each bin
    (training-fold edges); patients without any of the model's modalities get the mean training hazards.
    """
    t = data.target.loc[list(tr)]
    time_tr, event_tr = t["time"].to_numpy(), t["event"].to_numpy(bool)
    a = np.arange(len(tr))
    with cpu_threads(opts.num_threads):
        if model.task != HEADS["nll"]:
            return cox_survival_fn(predict(model, ds, a), time_tr, event_tr, pred)
        h_tr, h = expit(predict(model, ds, a, raw=True)), expit(predict(model, ds, b, raw=True))
    present = ds.presence(model.modalities).any(dim=1).numpy()
    if (~present[b]).any():
        h[~present[b]] = h_tr[present[a]].mean(axis=0) if present[a].any() else 0.5
    edges = time_bin_edges(time_tr.astype(np.float32), event_tr, opts.n_bins)  # as in _fold_labels
    return nll_survival_fn(h, edges)
