"""What an experiment runs on: its data (patient-indexed frames and bags, target), its options, and one
model's cross-validated result."""

from __future__ import annotations


from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from fusion.bags import bag_means, checked_bags
from fusion.errors import FusionConfigError, FusionDataError
from fusion.strategies import get_strategy

TASK_KINDS = ("survival", "classification", "regression")
HEADS = {"cox": "survival", "nll": "survival_nll"}
Split = tuple[list[str], list[str]]  # (train patient ids, validation patient ids)
EXPERTS = "experts"  # late fusion of classical per-modality experts (fusion.experts): a strategy outside the registry


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
    """Model and training settings shared by every neural model of the experiment.

    ``strategies`` may also name ``experts`` (fusion.experts: classical per-modality experts, late-fused;
    run beside the baseline, never through the neural pool); ``experts_components`` is each expert's PCA size.
    """

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
    bag_train_instances: int | None = None  # instances per bag at each training step (random); None: every one
    experts_components: int | None = 10  # PCA components per expert of the experts strategy; None: no PCA
    encoder_factories: dict[str, Callable[[int], torch.nn.Module]] | None = None  # modality -> in_dim -> encoder
    early_stopping: float | None = None  # neural fits hold out this fraction of training patients (fusion.train)
    tune: bool = False  # also choose the neural strategies' width and weight decay by inner CV (fusion.tuning)
    best: bool = False  # add the nested-selection rows 'best' and 'best:single' (fusion.nested)
    best_candidates: Sequence[str] | None = None  # row names 'best' picks among; None: every single/fusion/experts/baseline row

    def __post_init__(self) -> None:
        if EXPERTS in self.select:
            raise FusionConfigError(f"select: '{EXPERTS}' fits one expert per modality; it has no modality selection")
        for s in list(self.strategies) + list(self.select):
            if s != EXPERTS:
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
                **{k: v for k, v in self.extra.items() if k in ("robustness", "contributions", "tuned", "chosen")}}
