"""Deployable classical models: an experiment's classical rows refit on every labelled patient, kept as plain
arrays, calibrated like the neural models (fusion.deploy) and explained by exact modality Shapley values.

- ``baseline``: one logistic (classification) or CoxNet (survival) model on all the row's modalities side by side
  (a slide bag enters as its mean tile feature), as fusion.baseline_runs fits it;
- ``experts``: one such model per modality on its own PCA (survival: and the joint expert over every modality),
  late-fused (fusion.experts): the mean of the experts' log-probabilities, softmaxed (classification), or the
  weighted sum of their training-z-scored risks with the engine's stacking weights (survival; settings
  ``weight``, summing to 1).

Refit (fusion.deploy_classical_fit): the regularisation is chosen exactly as the engine chooses it on a
training fold, the final fit repeated with the same recipe to keep its coefficients, and those checked against
the engine's own predictions for every patient (drift guard).

Missing modalities (the Shapley coalitions use exactly this, so ``base_value + sum(values)`` is the prediction):
- baseline: the columns of an absent modality are NaN and imputed with the training medians (the baseline's own
  FoldPreprocessor imputation); the empty coalition is a patient at the training medians of every column;
- experts: an absent modality's expert contributes its training-mean score (classification: its mean
  log-probabilities; survival: 0 after z-scoring), as in cross-validation; the empty coalition is every expert
  at its training mean. Experts the engine skipped (too few patients) or dropped (survival: weight 0) are not
  kept: their modality then contributes 0.

Saved as ``model.json`` (``kind: "classical"``; the neural model.json's fields but the architecture) and
``model.npz``: numbers only (read with allow_pickle=False), per part ``p<i>_``: the preprocessing stages
``s<j>_median``, ``s<j>_columns``, ``s<j>_mean``, ``s<j>_scale`` (+ ``s<j>_pca_components``, ``s<j>_pca_mean``,
``s<j>_pca_scale``), ``coef`` [k, d], ``intercept`` [k] (CoxNet: minus its offset), ``class_ids`` [k'] (the
class ids of the logistic model's columns), ``fill`` (experts: the score of a patient lacking the modality),
``mu`` and ``sd`` (survival experts' z-scoring).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from fusion.calibration import log_probs_from_predictions, scaled_log_probs
from fusion.deploy_preprocess import FrozenPreprocessing
from fusion.errors import FusionDataError
from fusion.experiment_data import EXPERTS
from fusion.explain import exact_shapley

BASELINE = "baseline"
CLASSICAL = (BASELINE, EXPERTS)
STAGE_KEYS = ("median", "columns", "mean", "scale", "pca_components", "pca_mean", "pca_scale")


@dataclass
class TabularInputs:
    """A classical model's raw inputs: per modality a float64 matrix [n, d] in ``patients`` order (a NaN row: the
    patient lacks the modality; a bag enters as its mean instance, as in the experiment)."""

    patients: list[str]
    x: dict[str, np.ndarray]

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    def presence(self, modalities: Sequence[str]) -> np.ndarray:
        """Bool [n, M]: which patients have each of ``modalities``."""
        return np.stack([~np.isnan(self.x[m]).all(axis=1) for m in modalities], axis=1)

    def subset(self, indices: Sequence[int]) -> "TabularInputs":
        """Rows ``indices`` (positions, repeats allowed) as new inputs."""
        idx = np.asarray(indices, dtype=np.int64)
        return TabularInputs([self.patients[i] for i in idx], {m: v[idx] for m, v in self.x.items()})


@dataclass
class LinearPart:
    """One fitted linear model on its modalities' raw columns (side by side, in ``modalities`` order):
    preprocessing ``stages`` in turn, then scores = z @ coef.T + intercept [n, k]."""

    name: str
    modalities: list[str]
    stages: list[FrozenPreprocessing]
    coef: np.ndarray
    intercept: np.ndarray
    class_ids: np.ndarray | None = None
    fill: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    def features(self, x: np.ndarray) -> np.ndarray:
        """The model's features [n, d] (float32, as the engine's FoldPreprocessor gives them) of raw rows."""
        for stage in self.stages:
            x = stage.transform(x)
        return x

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Linear scores [n, k] (logistic decision values; CoxNet log-hazard in column 0)."""
        z = self.features(x).astype(np.float64)  # float64 whatever the batch (sklearn's float32 logistic: ~1e-7 off)
        return z @ self.coef.T.astype(np.float64) + self.intercept.astype(np.float64)

    def proba(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Logistic class probabilities [n, n_classes] (0 for a class the training rows lacked)."""
        s = self.scores(x)
        out = np.zeros((x.shape[0], n_classes))
        if s.shape[1] == 1:
            p1 = expit(s[:, 0])
            out[:, self.class_ids[0]], out[:, self.class_ids[1]] = 1.0 - p1, p1
        else:
            out[:, self.class_ids] = softmax(s, axis=1)
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}coef": self.coef, f"{prefix}intercept": self.intercept}
        for k in ("class_ids", "fill", "mu", "sd"):
            if getattr(self, k) is not None:
                out[f"{prefix}{k}"] = np.asarray(getattr(self, k))
        for j, st in enumerate(self.stages):
            out.update({f"{prefix}s{j}_{k}": getattr(st, k) for k in STAGE_KEYS if getattr(st, k) is not None})
        return out

    @classmethod
    def from_arrays(cls, meta: dict, arrays: Mapping[str, np.ndarray], prefix: str) -> "LinearPart":
        stages = [FrozenPreprocessing("flat", *[arrays.get(f"{prefix}s{j}_{k}") for k in STAGE_KEYS])
                  for j in range(int(meta["n_stages"]))]
        return cls(meta["name"], list(meta["modalities"]), stages, arrays[f"{prefix}coef"],
                   arrays[f"{prefix}intercept"], *[arrays.get(f"{prefix}{k}") for k in ("class_ids", "fill", "mu", "sd")],
                   settings=dict(meta.get("settings") or {}))


@dataclass
class DeployedClassical:
    """A fitted, calibrated classical model for one task, with DeployedModel's interface: ``predict`` on
    ``dataset(raw inputs)``, ``shapley``, ``embed``; ``parts``: the baseline's one model or the kept experts."""

    task: str
    strategy: str
    modalities: list[str]
    head: str | None
    classes: list[str] | None
    temperature: float
    version: str
    parts: list[LinearPart]
    chosen_by: dict
    n_train: int
    info: dict = field(default_factory=dict)
    kind: str = "classical"

    @property
    def risk_unit(self) -> str:
        """What a survival risk is: the CoxNet log-hazard, or the experts' weighted z-scored log-hazards."""
        return "log-hazard" if self.strategy == BASELINE else "weighted z-scored expert log-hazard"

    def dataset(self, inputs: Mapping[str, Mapping[str, Any]]) -> TabularInputs:
        """The model's raw inputs from ``{modality: {patient: raw vector [d] (a pd.Series is aligned by column
        name; NaN entries are median-imputed) or bag [T, d] (its mean instance)}}`` as DeployedModel.dataset
        takes them; patients in first-seen order over every modality given (modalities it does not take are
        ignored; a patient with none of them is a patient at the training medians / expert means)."""
        pats = list(dict.fromkeys(str(p) for m in inputs.values() for p in m))
        if not pats:
            raise FusionDataError("inputs: no patient")
        dims, names = self.info["input_dims"], self.info.get("feature_names") or {}
        x = {}
        for m in self.modalities:
            given = {str(p): v for p, v in (inputs.get(m) or {}).items()}
            mat = np.full((len(pats), int(dims[m])), np.nan)
            for i, p in enumerate(pats):
                v = given.get(p)
                if v is None:
                    continue
                if m in self.info.get("bag_modalities", []):
                    b = np.asarray(v, dtype=np.float64)
                    if b.ndim != 2 or b.shape[1] != mat.shape[1] or not len(b):
                        raise FusionDataError(f"inputs['{m}']['{p}']: expected a bag [T > 0, {mat.shape[1]}], "
                                              f"found {b.shape}")
                    mat[i] = b.mean(axis=0)
                    continue
                if isinstance(v, pd.Series) and names.get(m) is not None:
                    v = v.reindex(names[m])
                v = np.asarray(v, dtype=np.float64).reshape(-1)
                if v.size != mat.shape[1]:
                    raise FusionDataError(f"inputs['{m}']['{p}']: expected a vector of {mat.shape[1]} features "
                                          f"(the training columns), found {v.size}")
                mat[i] = v
            x[m] = mat
        return TabularInputs(pats, x)

    def presence(self, ds: TabularInputs) -> np.ndarray:
        """Bool [n, M]: which of the model's modalities each patient has."""
        return ds.presence(self.modalities)

    def _rows(self, part: LinearPart, ds: TabularInputs, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the part's raw rows [n, d] with absent modalities as NaN, bool [n]: the part's modality present)."""
        cols, has = [], np.zeros(ds.n_patients, dtype=bool)
        for m in part.modalities:
            on = present[:, self.modalities.index(m)]
            cols.append(np.where(on[:, None], ds.x[m], np.nan))
            has |= on
        return np.concatenate(cols, axis=1), has

    def _present(self, ds: TabularInputs, present: np.ndarray | None) -> np.ndarray:
        have = self.presence(ds)
        if present is None:
            return have
        p = np.asarray(present, dtype=bool)
        if p.shape != have.shape:
            raise FusionDataError(f"present: expected bool [{ds.n_patients}, {len(self.modalities)}] "
                                  f"(modalities {self.modalities}), found {p.shape}")
        return p & have

    def raw_predict(self, ds: TabularInputs, present: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated predictions as the experiment's row gives them: P(class 1) [n] (binary), probabilities
        [n, K], or the survival risk [n]; ``present`` (bool [n, M]) keeps only those modalities of each patient."""
        mask = self._present(ds, present)
        k = len(self.classes or [])
        if self.strategy == BASELINE:
            x, _ = self._rows(self.parts[0], ds, mask)
            out = self.parts[0].proba(x, k) if self.task == "diagnosis" else self.parts[0].scores(x)[:, 0]
        else:
            per = []
            for part in self.parts:
                x, has = self._rows(part, ds, mask)
                s = np.broadcast_to(part.fill, (ds.n_patients,) + np.shape(part.fill)).astype(np.float64)
                if has.any():
                    s[has] = (np.log(np.clip(part.proba(x[has], k), 1e-9, 1.0)) if self.task == "diagnosis"
                              else part.scores(x[has])[:, 0])
                per.append(s if self.task == "diagnosis" else part.settings["weight"] * (s - part.mu) / part.sd)
            out = softmax(np.mean(per, axis=0), axis=1) if self.task == "diagnosis" else np.sum(per, axis=0)
        return out[:, 1] if self.task == "diagnosis" and k == 2 else out

    def log_probs(self, ds: TabularInputs, present: np.ndarray | None = None) -> np.ndarray:
        """Diagnosis: uncalibrated class log-probabilities [n, K], floored as the experiment's out-of-fold
        predictions were for the temperature fit (fusion.calibration.log_probs_from_predictions)."""
        if self.task != "diagnosis":
            raise FusionDataError(f"log_probs: a {self.task} model gives risks, not class probabilities")
        return log_probs_from_predictions(self.raw_predict(ds, present))

    def predict(self, ds: TabularInputs, present: np.ndarray | None = None) -> np.ndarray:
        """Diagnosis: calibrated class probabilities softmax(log_probs / T) [n, K]; survival: risk [n]."""
        if self.task != "diagnosis":
            return self.raw_predict(ds, present)
        return np.exp(scaled_log_probs(self.log_probs(ds, present), self.temperature))

    def embed(self, ds: TabularInputs) -> np.ndarray:
        """The model's own features side by side [n, d] (float64): the baseline's z-scored columns (absent ones
        at the training medians), each expert's PCA scores (zeros where the patient lacks its modality)."""
        mask, out = self.presence(ds), []
        for part in self.parts:
            x, has = self._rows(part, ds, mask)
            z = part.features(x).astype(np.float64)
            if self.strategy != BASELINE:
                z[~has] = 0.0
            out.append(z)
        return np.concatenate(out, axis=1)

    def shapley(self, ds: TabularInputs, index: int, target: int | None = None) -> dict:
        """Exact Shapley values of patient ``index``'s calibrated probability of class ``target`` (default: the
        predicted class) or survival risk over the model's modalities the patient has; a modality outside a
        coalition is absent as the model handles absence (module docstring). Same keys as
        fusion.explain.fusion_model_shapley: base_value, values (0.0 for modalities the patient lacks),
        predicted (None for survival), probability (the full coalition's value)."""
        if not 0 <= int(index) < ds.n_patients:
            raise FusionDataError(f"patient index {index} out of range: the inputs have {ds.n_patients} patients")
        have = self.presence(ds)[int(index)]
        players = [m for j, m in enumerate(self.modalities) if have[j]]
        if not players:
            raise FusionDataError(f"shapley: patient '{ds.patients[index]}' has none of the model's modalities "
                                  f"{self.modalities}")
        subsets = [frozenset(c) for k in range(len(players) + 1) for c in itertools.combinations(players, k)]
        masks = np.array([[m in s for m in self.modalities] for s in subsets], dtype=bool)
        out = self.predict(ds.subset([int(index)] * len(subsets)), present=masks)
        predicted = None
        if self.task == "diagnosis":
            predicted = int(np.argmax(out[-1]))
            cls = predicted if target is None else int(target)
            if not 0 <= cls < out.shape[1]:
                raise FusionDataError(f"shapley: target {target} outside the model's {out.shape[1]} classes")
            out = out[:, cls]
        by = dict(zip(subsets, map(float, out)))
        base, phi = exact_shapley(by.__getitem__, players)
        return {"base_value": base, "values": {m: float(phi.get(m, 0.0)) for m in self.modalities},
                "predicted": predicted, "probability": by[frozenset(players)]}


def save_classical(dm: DeployedClassical, tmp: Path, meta: dict) -> None:
    """Write model.json (``meta`` + the parts' description) and model.npz (module docstring) into ``tmp``."""
    arrays = {}
    for i, p in enumerate(dm.parts):
        arrays.update(p.arrays(f"p{i}_"))
    meta = {**meta, "parts": [{"name": p.name, "modalities": p.modalities, "n_stages": len(p.stages),
                               "settings": p.settings} for p in dm.parts]}
    with open(tmp / "model.npz", "wb") as f:
        np.savez(f, **arrays)
    (tmp / "model.json").write_text(json.dumps(meta, indent=1, default=float))


def load_classical(meta: dict, folder: Path) -> DeployedClassical:
    """The classical model of ``folder`` (``meta``: its model.json); FusionDataError naming the file when the
    arrays are absent or unreadable."""
    path = folder / "model.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        parts = [LinearPart.from_arrays(p, arrays, f"p{i}_") for i, p in enumerate(meta["parts"])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FusionDataError(f"{path}: cannot read the deployed classical model ({exc})") from exc
    info = {k: v for k, v in meta.items() if k not in ("task", "strategy", "modalities", "head", "classes",
                                                      "temperature", "version", "chosen_by", "n_train", "parts")}
    return DeployedClassical(meta["task"], meta["strategy"], meta["modalities"], meta["head"], meta["classes"],
                             float(meta["temperature"]), meta["version"], parts, meta["chosen_by"],
                             int(meta["n_train"]), info)
