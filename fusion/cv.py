"""Cross-validation of fusion and single-modality models on shared folds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

from fusion.data import MultimodalDataset
from fusion.encoders import EncoderFactory
from fusion.errors import FusionConfigError, FusionDataError
from fusion.heads import check_task, n_outputs_for
from fusion.metrics import c_index, r2, roc_auc
from fusion.model import FusionModel
from fusion.train import TrainConfig, cpu_threads, fit, predict, seeded

METRIC_FOR_TASK = {"binary": "auc", "multiclass": "auc", "regression": "r2", "survival": "c_index"}

Split = tuple[int, int, np.ndarray, np.ndarray]  # (repeat, fold, train_idx, test_idx)


@dataclass
class CVResult:
    """Cross-validation outcome: per-fold metric table, its mean/std and out-of-fold predictions.

    ``folds`` columns: repeat, fold, metric, value, n_test. ``oof`` is indexed by patient
    (mean prediction over repeats; one column ``prediction``, or ``p_<class>`` for multiclass).
    """

    name: str
    strategy: str
    modalities: list[str]
    task: str
    metric: str
    folds: pd.DataFrame
    mean: float
    std: float
    oof: pd.DataFrame
    extra: dict = field(default_factory=dict)


def make_splits(dataset: MultimodalDataset, task: str, n_splits: int = 5, n_repeats: int = 1, seed: int = 0) -> list[Split]:
    """(repeat, fold, train_idx, test_idx) for every fold: stratified on the class (classification)
    or on the event indicator (survival), plain K-fold for regression; deterministic given ``seed``."""
    check_task(task)
    n = dataset.n_patients
    if n_splits < 2 or n_splits > n:
        raise FusionConfigError(f"make_splits: n_splits must be in [2, {n}], got {n_splits}")
    x = np.zeros((n, 1))
    if task in ("binary", "multiclass"):
        if not isinstance(dataset.y, torch.Tensor):
            raise FusionDataError(f"task '{task}' needs class labels y")
        strata = dataset.y.numpy()
        splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    elif task == "survival":
        if not isinstance(dataset.y, tuple):
            raise FusionDataError("task 'survival' needs y = (time, event)")
        strata = dataset.y[1].numpy().astype(int)
        splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    else:
        strata = None
        splitter = RepeatedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    splits = []
    for k, (tr, te) in enumerate(splitter.split(x, strata)):
        splits.append((k // n_splits, k % n_splits, np.sort(tr), np.sort(te)))
    return splits


def _score(task: str, dataset: MultimodalDataset, test_idx: np.ndarray, pred: np.ndarray) -> float:
    if task in ("binary", "multiclass"):
        return roc_auc(dataset.y.numpy()[test_idx], pred)
    if task == "survival":
        return c_index(dataset.y[0].numpy()[test_idx], dataset.y[1].numpy()[test_idx], pred)
    return r2(dataset.y.numpy()[test_idx], pred)


def cross_validate(
    dataset: MultimodalDataset,
    *,
    modalities: Sequence[str],
    strategy: str,
    task: str = "binary",
    n_splits: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    train_config: TrainConfig | None = None,
    encoder_factories: Mapping[str, EncoderFactory] | None = None,
    splits: Sequence[Split] | None = None,
    name: str | None = None,
    model_kwargs: Mapping[str, object] | None = None,
) -> CVResult:
    """K-fold CV of a FusionModel (``strategy`` over ``modalities``); metric 'auc', 'c_index' or 'r2'.

    Each fold standardises on its training part only, trains with ``train_config``
    (seed offset by repeat and fold) and scores every test patient; patients lacking all
    the model's modalities get the training-fold prior (see fusion.train.fit), so single-
    modality baselines are scored on the same patients as fusion models. ``splits``
    (from make_splits) fixes the folds; otherwise they come from ``seed``.
    """
    check_task(task)
    modalities = list(modalities)
    if strategy == "single" and len(modalities) != 1:
        raise FusionConfigError(f"strategy 'single' takes exactly one modality, got {modalities}")
    ds = dataset.select(modalities)
    n_out = n_outputs_for(task, ds.y)
    cfg = train_config or TrainConfig()
    if splits is None:
        splits = make_splits(ds, task, n_splits, n_repeats, seed)
    n_rep = max(s[0] for s in splits) + 1
    oof_sum = np.zeros((ds.n_patients, n_out if task == "multiclass" else 1))
    oof_count = np.zeros(ds.n_patients)
    rows = []
    metric = METRIC_FOR_TASK[task]
    for repeat, fold, tr, te in splits:
        fold_ds = ds.standardise(tr)
        fold_cfg = TrainConfig(**{**cfg.__dict__, "seed": cfg.seed + 1000 * repeat + fold})
        with seeded(fold_cfg.seed):  # weight initialisation is part of the seeded experiment
            model = FusionModel.for_dataset(
                fold_ds,
                modalities,
                strategy,
                n_out,
                task=task,
                encoder_factories=encoder_factories,
                modality_dropout=cfg.modality_dropout if cfg.modality_dropout is not None else 0.2,
                **dict(model_kwargs or {}),
            )
        fit(model, fold_ds, tr, fold_cfg)
        with cpu_threads(cfg.num_threads):
            pred = predict(model, fold_ds, te)
        rows.append({"repeat": repeat, "fold": fold, "metric": metric, "value": _score(task, ds, te, pred), "n_test": len(te)})
        oof_sum[te] += pred.reshape(len(te), -1)
        oof_count[te] += 1
    folds = pd.DataFrame(rows, columns=["repeat", "fold", "metric", "value", "n_test"])
    with np.errstate(invalid="ignore"):
        oof_mean = oof_sum / oof_count[:, None]
    cols = [f"p_{c}" for c in range(n_out)] if task == "multiclass" else ["prediction"]
    oof = pd.DataFrame(oof_mean, index=pd.Index(ds.patients, name="patient"), columns=cols)
    values = folds["value"].to_numpy()
    return CVResult(
        name=name or f"{strategy}:{'+'.join(modalities)}",
        strategy=strategy,
        modalities=modalities,
        task=task,
        metric=metric,
        folds=folds,
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        oof=oof,
        extra={"n_repeats": n_rep},
    )


def compare_strategies(
    dataset: MultimodalDataset,
    strategies: Sequence[str],
    single_modalities: Sequence[str],
    *,
    modalities: Sequence[str] | None = None,
    task: str = "binary",
    n_splits: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    train_config: TrainConfig | None = None,
    encoder_factories: Mapping[str, EncoderFactory] | None = None,
    return_results: bool = False,
    model_kwargs: Mapping[str, object] | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, CVResult]]:
    """One row per experiment (fusion ``strategies`` over ``modalities`` (default: all), then a 'single'
    model per modality in ``single_modalities``), all on the SAME folds.

    Columns: name, kind ('fusion'|'single'), strategy, modalities ('+'-joined), metric, mean, std, n_folds.
    With ``return_results`` also the CVResult of each experiment keyed by name.
    """
    fused = list(modalities) if modalities is not None else dataset.modality_names
    splits = make_splits(dataset, task, n_splits, n_repeats, seed)
    experiments = [(f"fusion:{s}", "fusion", s, fused) for s in strategies]
    experiments += [(f"single:{m}", "single", "single", [m]) for m in single_modalities]
    rows, results = [], {}
    for name, kind, strategy, mods in experiments:
        factories = {k: f for k, f in (encoder_factories or {}).items() if k in mods}
        res = cross_validate(
            dataset,
            modalities=mods,
            strategy=strategy,
            task=task,
            train_config=train_config,
            encoder_factories=factories,
            splits=splits,
            name=name,
            model_kwargs=model_kwargs,
        )
        results[name] = res
        rows.append(
            {
                "name": name,
                "kind": kind,
                "strategy": strategy,
                "modalities": "+".join(mods),
                "metric": res.metric,
                "mean": res.mean,
                "std": res.std,
                "n_folds": len(res.folds),
            }
        )
    table = pd.DataFrame(rows, columns=["name", "kind", "strategy", "modalities", "metric", "mean", "std", "n_folds"])
    return (table, results) if return_results else table
