"""A deployed model's frozen preprocessing: the engine's per-fold preprocessing (fusion.preprocess.FoldPreprocessor)
fitted on every training patient and kept as plain arrays, and the model's dataset built from raw inputs with it.

Used by the neural deployed model (fusion.deploy) and the classical one (fusion.deploy_classical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fusion.bags import training_instances
from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionDataError
from fusion.experiment_data import ExperimentData, ExperimentOptions
from fusion.preprocess import FoldPreprocessor


@dataclass
class FrozenPreprocessing:
    """One modality's training-time preprocessing (fusion.preprocess.FoldPreprocessor's statistics as arrays):
    median imputation, column filter, z-scoring, optional PCA scores rescaled to unit variance.

    ``kind``: "flat" (one raw vector [d] per patient) or "bag" (instances [T, d] per patient).
    """

    kind: str
    median: np.ndarray
    columns: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    pca_components: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    pca_scale: np.ndarray | None = None
    feature_names: list[str] | None = None

    @classmethod
    def of(cls, kind: str, pre: FoldPreprocessor, feature_names: list[str] | None = None) -> "FrozenPreprocessing":
        pca = pre.pca_
        return cls(kind, pre.median_, pre.columns_, pre.mean_, pre.scale_,
                   None if pca is None else pca.components_, None if pca is None else pca.mean_,
                   None if pca is None else pre.pca_scale_, feature_names)

    @property
    def n_in(self) -> int:
        return int(self.median.size)

    @property
    def n_out(self) -> int:
        return int(self.columns.size if self.pca_components is None else self.pca_components.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows [n, d_raw] -> model features [n, n_out] (float32), as FoldPreprocessor.transform."""
        x = np.asarray(x, dtype=np.float64)
        x = np.where(np.isnan(x), self.median, x)
        z = (x[:, self.columns] - self.mean) / self.scale
        if self.pca_components is not None:
            z = ((z - self.pca_mean) @ self.pca_components.T) / self.pca_scale
        return z.astype(np.float32)

    def arrays(self) -> dict[str, torch.Tensor]:
        names = ("median", "columns", "mean", "scale", "pca_components", "pca_mean", "pca_scale")
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in names
                if getattr(self, k) is not None}

    @classmethod
    def from_arrays(cls, kind: str, arrays: Mapping[str, torch.Tensor], feature_names: list[str] | None
                    ) -> "FrozenPreprocessing":
        a = {k: v.numpy() for k, v in arrays.items()}
        return cls(kind, a["median"], a["columns"], a["mean"], a["scale"], a.get("pca_components"),
                   a.get("pca_mean"), a.get("pca_scale"), feature_names)


def fit_preprocessing(data: ExperimentData, opts: ExperimentOptions, modalities: Sequence[str]
                      ) -> dict[str, FrozenPreprocessing]:
    """Each modality's preprocessing fitted on every patient of ``data``, exactly as fusion.folds.fold_dataset
    fits it on a training fold (flat: the present rows; bags: up to ``opts.bag_fit_instances`` instances)."""
    out = {}
    for m in modalities:
        if m in (data.bags or {}):
            bags = [data.bags[m][p] for p in data.patients if p in data.bags[m]]
            pre = FoldPreprocessor(None, opts.bag_components, opts.seed).fit(
                training_instances(bags, opts.bag_fit_instances, opts.seed))
            out[m] = FrozenPreprocessing.of("bag", pre)
            continue
        x = data.features[m].to_numpy(dtype=np.float64)
        rows = ~np.isnan(x).all(axis=1)
        if rows.sum() < 2:
            raise FusionDataError(f"modality '{m}': fewer than 2 patients have it; nothing to deploy on")
        pre = FoldPreprocessor(opts.max_features, opts.n_components, opts.seed).fit(x[rows])
        out[m] = FrozenPreprocessing.of("flat", pre, [str(c) for c in data.features[m].columns])
    return out


def preprocessed_dataset(prep: Mapping[str, FrozenPreprocessing], inputs: Mapping[str, Mapping[str, Any]],
                         patients: Sequence[str] | None = None) -> MultimodalDataset:
    """The model's dataset from raw inputs ``{modality: {patient: vector [d] or bag [T, d]}}`` (see
    DeployedModel.dataset); ``patients`` default: every patient of the inputs, in first-seen order. Inputs of
    modalities the model does not take are ignored (a patient having none of its modalities gets the prior)."""
    if patients is None:
        patients = list(dict.fromkeys(str(p) for m in inputs.values() for p in m))
    pats = [str(p) for p in patients]
    if not pats:
        raise FusionDataError("inputs: no patient")
    mods = {}
    for m, pre in prep.items():
        given = {str(p): v for p, v in (inputs.get(m) or {}).items()}
        if pre.kind == "bag":
            bags = [None] * len(pats)
            for i, p in enumerate(pats):
                b = None if given.get(p) is None else np.asarray(given[p], dtype=np.float64)
                if b is not None and (b.ndim != 2 or b.shape[1] != pre.n_in):
                    raise FusionDataError(f"inputs['{m}']['{p}']: expected a bag [T, {pre.n_in}], found {b.shape}")
                bags[i] = torch.from_numpy(pre.transform(b)) if b is not None and len(b) else torch.zeros(0, pre.n_out)
            mods[m] = ModalityData(m, bags, torch.tensor([b.shape[0] > 0 for b in bags], dtype=torch.bool))
            continue
        x = np.full((len(pats), pre.n_in), np.nan)
        for i, p in enumerate(pats):
            if given.get(p) is not None:
                v = given[p]
                if isinstance(v, pd.Series) and pre.feature_names is not None:
                    v = v.reindex(pre.feature_names)  # by column name; a missing column is median-imputed
                v = np.asarray(v, dtype=np.float64).reshape(-1)
                if v.size != pre.n_in:
                    raise FusionDataError(f"inputs['{m}']['{p}']: expected a vector of {pre.n_in} features "
                                          f"(the training columns), found {v.size}")
                x[i] = v
        present = ~np.isnan(x).all(axis=1)
        z = pre.transform(x)
        z[~present] = 0.0
        mods[m] = ModalityData(m, torch.from_numpy(np.ascontiguousarray(z)), torch.from_numpy(present))
    return MultimodalDataset(patients=pats, modalities=mods)


def raw_inputs(data: ExperimentData, modalities: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """An experiment's raw inputs in DeployedModel.dataset's form (flat rows that are not all NaN, bags)."""
    out = {}
    for m in modalities:
        if m in (data.bags or {}):
            out[m] = dict(data.bags[m])
            continue
        f = data.features[m]
        out[m] = {p: row for p, row in zip(f.index, f.to_numpy(np.float64)) if not np.isnan(row).all()}
    return out
