"""The experiment engine: every model of a spec (baseline, each single modality, each fusion strategy,
each survival head) cross-validated on the SAME folds, with per-fold preprocessing fitted on the
training fold only. Inputs are patient-indexed feature frames; ``flows`` builds them from a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from fusion.bags import bag_means, checked_bags, fold_bags
from fusion.baselines import coxnet_fit_predict, logistic_fit_predict, ridge_fit_predict
from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionConfigError, FusionDataError
from fusion.model import FusionModel
from fusion.preprocess import FoldPreprocessor
from fusion.robustness import robustness_curve
from fusion.strategies import get_strategy
from fusion.survival_functions import SurvivalFn, cox_survival_fn, nll_survival_fn
from fusion.survival_heads import time_bin_edges, to_bins
from fusion.task_metrics import PRIMARY_METRIC, classification_metrics, regression_metrics, survival_metrics
from fusion.train import TrainConfig, cpu_threads, fit, predict, seeded

TASK_KINDS = ("survival", "classification", "regression")
HEADS = {"cox": "survival", "nll": "survival_nll"}
Split = tuple[list[str], list[str]]  # (train patient ids, validation patient ids)


@dataclass
class ExperimentData:
    """Patients, feature frames per modality (NaN-only row = modality absent), instance bags, covariates, target.

    ``bags``: bag modalities, ``{modality: {patient: float array [T, d]}}`` (e.g. slide tiles); a patient
    without a bag (or with an empty one) lacks the modality. Bags stay ragged (padded per mini-batch only).

    ``target``: survival -> columns ``time``, ``event`` (bool, True = event observed);
    classification -> column ``label`` (int class ids into ``classes``); regression -> ``value``.
    """

    patients: list[str]
    features: dict[str, pd.DataFrame]
    task: str
    target: pd.DataFrame
    covariates: pd.DataFrame | None = None
    classes: list[str] | None = None
    bags: dict[str, dict[str, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise FusionConfigError(f"task.kind: expected one of {list(TASK_KINDS)}, found '{self.task}'")
        self.bags = {m: checked_bags(m, b, self.patients) for m, b in (self.bags or {}).items()}
        clash = sorted(set(self.bags) & set(self.features))
        if clash:
            raise FusionDataError(f"modality '{clash[0]}' is both a feature frame and a bag modality")
        if not self.features and not self.bags:
            raise FusionDataError("experiment has no modality")
        idx = pd.Index(self.patients)
        for name, f in self.features.items():
            self.features[name] = f.reindex(idx)
        self.target = self.target.reindex(idx)
        if self.covariates is not None:
            self.covariates = self.covariates.reindex(idx)

    @property
    def modality_names(self) -> list[str]:
        """Flat modalities (feature frames) then bag modalities."""
        return list(self.features) + list(self.bags or {})

    def has_modality(self, name: str, patients: Sequence[str]) -> np.ndarray:
        """Bool [len(patients)]: which of ``patients`` have modality ``name`` (a non-NaN row or a bag)."""
        if name in self.features:
            return self.features[name].loc[list(patients)].notna().any(axis=1).to_numpy()
        bags = self.bags[name]
        return np.array([p in bags for p in patients], dtype=bool)

    def bag_means(self, name: str) -> pd.DataFrame:
        """Per-patient mean instance of bag modality ``name`` [n_patients, d] (NaN row where absent)."""
        return bag_means(name, self.bags[name], self.patients)


@dataclass
class ExperimentOptions:
    """Model and training settings shared by every neural model of the experiment."""

    strategies: Sequence[str] = ("early", "late", "attention", "kronecker")
    heads: Sequence[str] = ("cox",)
    epochs: int = 60
    lr: float = 1e-3
    nll_lr: float = 3e-3  # the discrete-time NLL head trains better with a larger step (BLCA: 0.603 vs 0.527)
    weight_decay: float = 1e-2
    embed_dim: int = 16
    hidden: int = 32
    dropout: float = 0.3
    modality_dropout: float = 0.2
    n_components: int | None = 16
    max_features: int | None = 2000
    n_bins: int = 4
    coxnet_inner_folds: int = 3
    coxnet_n_alphas: int = 15
    coxnet_alpha_min_ratio: float = 0.05
    baseline: bool = True
    singles: bool | Sequence[str] = True  # every single modality, none, or those named
    robustness: bool = True
    seed: int = 0
    num_threads: int | None = 1
    modality_filter: Sequence[str] | None = None  # restrict singles/fusion to these modalities
    select: Sequence[str] = ()  # fusion strategies also run with inner-CV modality-subset selection
    inner_folds: int = 3
    bag_components: int | None = None  # PCA of bag instances (fitted on training instances); None: z-score only
    bag_fit_instances: int = 20000  # at most this many training instances (random) fit the bag preprocessing
    bag_batch_size: int | None = 32  # mini-batch size (patients) of models with a bag modality; None: full batch
    encoder_factories: dict[str, Callable[[int], torch.nn.Module]] | None = None  # modality -> in_dim -> encoder

    def __post_init__(self) -> None:
        for s in list(self.strategies) + list(self.select):
            get_strategy(s)
        inst = [s for s in self.select if getattr(get_strategy(s), "instance_level", False)]
        if inst:
            raise FusionConfigError(f"select: strategy '{inst[0]}' needs a bag and a flat modality in every subset; "
                                    "it cannot be combined with modality selection")
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise FusionConfigError(f"heads: expected a subset of {list(HEADS)}, found {bad}")


@dataclass
class ModelResult:
    """One model's cross-validation: per-fold metrics, mean/std of the primary metric, OOF predictions."""

    name: str
    strategy: str
    modalities: list[str]
    head: str | None
    metric: str
    folds: list[float]
    fold_metrics: list[dict[str, float]]
    oof: pd.DataFrame
    extra: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean of the primary metric over folds."""
        return float(np.mean(self.folds))

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0) of the primary metric over folds."""
        return float(np.std(self.folds))

    def row(self) -> dict:
        """The JSON row: strategy, modalities, metric, mean, std, folds (+ name, head, other metrics).

        ``other_metrics``: mean over the folds where the metric is finite (a fold too small for a
        td-AUC or an IBS gives NaN there); ``other_metrics_folds``: how many folds that mean covers.
        """
        others = sorted({k for m in self.fold_metrics for k in m} - {self.metric})
        vals = {k: np.array([m.get(k, np.nan) for m in self.fold_metrics], dtype=np.float64) for k in others}
        ok = {k: np.isfinite(v) for k, v in vals.items()}
        return {"name": self.name, "strategy": self.strategy, "modalities": list(self.modalities), "head": self.head,
                "metric": self.metric, "mean": self.mean, "std": self.std, "folds": [float(v) for v in self.folds],
                "other_metrics": {k: float(v[ok[k]].mean()) if ok[k].any() else float("nan") for k, v in vals.items()},
                "other_metrics_folds": {k: int(ok[k].sum()) for k in others},
                **{k: v for k, v in self.extra.items() if k in ("robustness", "contributions", "tuned")}}


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
                      num_threads=opts.num_threads, batch_size=opts.bag_batch_size if has_bag else None)
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
    """
    from fusion.selection import select_subset

    metric = PRIMARY_METRIC[data.task]
    fold_metrics, oofs, curves, chosen = [], [], [], []
    for k, (tr, va) in enumerate(splits):
        seed = opts.seed + 1000 * k
        mods, strat = list(modalities), strategy
        if select:
            mods, inner = select_subset(data, tr, opts, strategy, modalities, head, seed)
            strat = strategy if len(mods) > 1 else "single"
            chosen.append({"modalities": mods, "inner": inner})
        pred, model, ds, b = fit_predict_fold(data, tr, va, opts, strat, mods, head, seed)
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
            plan += [(s, mods, h, False) for s in opts.strategies]
            plan += [(s, mods, h, True) for s in opts.select]
    return plan


def check_instance_strategies(data: ExperimentData, opts: ExperimentOptions) -> None:
    """FusionConfigError naming ``strategies`` when an instance-level strategy (coattention) lacks a bag or a
    flat modality among the experiment's (filtered) modalities."""
    mods = [m for m in data.modality_names if opts.modality_filter is None or m in opts.modality_filter]
    bags = [m for m in mods if m in (data.bags or {})]
    for s in opts.strategies:
        if getattr(get_strategy(s), "instance_level", False) and (not bags or len(bags) == len(mods)):
            raise FusionConfigError(f"strategies: '{s}' needs at least one bag modality (instance bags, e.g. slide "
                                    f"tiles) and one flat modality; found bag modalities {bags} among {mods}")


def run_experiment(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions | None = None,
                   progress: Callable[[str], None] | None = None, workers: int = 1) -> list[ModelResult]:
    """Every model of the experiment on the same ``splits``: baseline, singles, fusions (per head).

    ``workers`` > 1 trains the neural models on that many spawned processes (same results).
    """
    from fusion.experiment_pool import run_models

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
    return results + run_models(data, splits, opts, model_plan(data, opts), workers, report)
