"""The run's deployable models: the configuration the experiment engine's ``best`` selection chose, refit on
every labelled patient with the engine's own preprocessing and training, calibrated on the experiment's
out-of-fold predictions, saved with its version and read back for new patients.

A deployed model is a folder ``STORE/models/<task>/`` holding ``model.pt`` (the FusionModel's state_dict and
the preprocessing arrays) and ``model.json`` (what it is, how it was chosen and fitted, its calibration).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fusion.bags import training_instances
from fusion.calibration import calibration_summary, log_probs_from_predictions, oof_log_probs, scaled_log_probs
from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment_data import ExperimentData, ExperimentOptions, ModelResult
from fusion.folds import fit_predict_fold
from fusion.model import FusionModel
from fusion.preprocess import FoldPreprocessor
from fusion.train import cpu_threads, predict as model_predict

TASK_OF_KIND = {"classification": "diagnosis", "survival": "survival"}
CLASSICAL = ("baseline", "experts")  # strategies whose models are not FusionModels (not deployable yet)
NOT_A_MODEL = ("best", "published")
FORMAT = 1  # model.json "format": bump when the folder's layout changes


def _is_neural(row: dict) -> bool:
    return row.get("strategy") not in CLASSICAL + NOT_A_MODEL and bool(row.get("folds"))


def _chosen(row: dict) -> list[str]:
    return list(row.get("chosen") or (row.get("extra") or {}).get("chosen") or [])


def _configuration(row: dict) -> tuple[str, list[str], str | None, str]:
    """(strategy, modalities, head, note) of a neural row; a '+select' row deploys its most frequent subset."""
    tuned = [t["modalities"] for t in (row.get("tuned") or (row.get("extra") or {}).get("tuned") or [])
             if isinstance(t, dict) and t.get("modalities")]
    if not tuned:
        return row["strategy"], list(row["modalities"]), row.get("head"), ""
    subset, n = Counter(tuple(m) for m in tuned).most_common(1)[0]
    strategy = row["strategy"] if len(subset) > 1 else "single"
    note = f"; its inner CV picked {'+'.join(subset)} in {n}/{len(tuned)} folds"
    return strategy, list(subset), row.get("head"), note


def deploy_choice(rows: list[dict]) -> tuple[str, list[str], str | None, dict]:
    """The configuration to deploy: (strategy, modalities, head, why) from an experiment's rows.

    With the ``best`` row (name "best", ``chosen`` (or ``extra["chosen"]``) = the candidate row name each
    outer fold chose): the most frequent choice (ties: the candidate with the higher mean). Without one: the
    neural row with the highest mean. A classical choice (strategy baseline/experts) falls back to the best
    neural row (deploying classical models is not implemented); a '+select' row deploys the modality subset
    its inner CV picked most often. ``why``: {"row", "best_row_choices", "reason", "metric", "mean"}.
    Raises FusionDataError when no neural row exists or a chosen name is not among the rows.
    """
    by_name = {r["name"]: r for r in rows}
    neural = [r for r in rows if _is_neural(r)]
    if not neural:
        raise FusionDataError(f"deploy_choice: no neural model among the rows {[r.get('name') for r in rows]}")
    top = max(neural, key=lambda r: r["mean"])
    best = next((r for r in rows if r.get("name") == "best"), None)  # not 'best:single': it picks singles only
    choices = _chosen(best) if best is not None else []
    if choices:
        unknown = sorted({c for c in choices if c not in by_name})
        if unknown:
            raise FusionDataError(f"deploy_choice: the best row chose {unknown}, which are not rows of the experiment")
        counts = Counter(choices)
        pick = max(counts, key=lambda c: (counts[c], by_name[c]["mean"]))
        reason = f"best selection chose '{pick}' in {counts[pick]}/{len(choices)} outer folds"
        row = by_name[pick]
        if not _is_neural(row):
            reason += (f"; '{pick}' is a classical model ({row['strategy']}), whose deployment is not implemented: "
                       f"deployed the best neural row '{top['name']}' instead")
            row = top
    else:
        reason = "no best-selection row: deployed the neural row with the highest mean"
        row = top
    strategy, mods, head, note = _configuration(row)
    why = {"row": row["name"], "best_row_choices": choices, "reason": reason + note,
           "metric": row.get("metric"), "mean": float(row["mean"])}
    return strategy, mods, head, why


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


@dataclass
class DeployedModel:
    """A fitted, calibrated model for one task; ``predict`` on ``dataset(raw inputs)``.

    ``info``: code version, engine options, input hashes, calibration (ECE before/after), fit time, the
    model's architecture (what load_deployed needs to rebuild it); ``preprocessing``: per modality.
    """

    task: str
    strategy: str
    modalities: list[str]
    head: str | None
    classes: list[str] | None
    temperature: float
    version: str
    model: FusionModel
    chosen_by: dict
    n_train: int
    info: dict = field(default_factory=dict)
    preprocessing: dict[str, FrozenPreprocessing] = field(default_factory=dict)

    def dataset(self, inputs: dict[str, dict[str, np.ndarray]]) -> MultimodalDataset:
        """The model's dataset from raw inputs ``{modality: {patient: raw vector [d] (a row of
        STORE/embeddings/<modality>.parquet: a pd.Series is aligned by column name, an array must follow
        ``info['feature_names']``; NaN entries are median-imputed) or bag [T, d] (STORE/wsi/<patient>.h5 as
        read by flows.stages.fusion_experiments.slide_bags)}}``, preprocessed with the training-time
        statistics; a patient lacking a modality is simply absent from it. Patients come in first-seen order
        (``ds.patients``); modalities the model does not take (not in ``modalities``) are ignored."""
        return preprocessed_dataset(self.preprocessing, inputs)

    def _presence(self, ds: MultimodalDataset, present: np.ndarray | None) -> torch.Tensor:
        have = ds.presence(self.modalities)
        if present is None:
            return have
        p = torch.as_tensor(np.asarray(present, dtype=bool))
        if p.shape != have.shape:
            raise FusionDataError(f"present: expected bool [{ds.n_patients}, {len(self.modalities)}] "
                                  f"(modalities {self.modalities}), found {tuple(p.shape)}")
        return p & have

    @torch.no_grad()
    def _outputs(self, ds: MultimodalDataset, present: np.ndarray | None, raw: bool) -> np.ndarray:
        self.model.eval()
        with cpu_threads(1):
            if present is None:
                return model_predict(self.model, ds, np.arange(ds.n_patients), raw=raw)
            from fusion.heads import outputs_to_predictions

            mask = self._presence(ds, present)
            out = []
            for s in range(0, ds.n_patients, 32):
                rows = np.arange(s, min(s + 32, ds.n_patients))
                o = self.model(ds.to_batch(rows, self.modalities), present=mask[rows]).float()
                out.append(o if raw else outputs_to_predictions(self.model.task, o).float())
            pred = torch.cat(out)
            if not raw:
                fb = self.model.fallback_prediction.float()
                pred[~mask.any(dim=1)] = fb[0] if pred.dim() == 1 else fb[: pred.shape[1]]
            return pred.numpy().astype(np.float64)

    def raw_predict(self, ds: MultimodalDataset, present: np.ndarray | None = None) -> np.ndarray:
        """Uncalibrated predictions as fusion.train.predict gives them; ``present`` (bool [n, M] over
        ``modalities``) keeps only those modalities of each patient (rows with none: the training prior)."""
        return self._outputs(ds, present, raw=False)

    def log_probs(self, ds: MultimodalDataset, present: np.ndarray | None = None) -> np.ndarray:
        """Diagnosis: uncalibrated class log-probabilities [n, K] from the model's logits in float64 (binary:
        [log sigmoid(-l), log sigmoid(l)]; multiclass: log softmax); rows with none of the (``present``)
        modalities: the log of the training prior (as fusion.calibration.log_probs_from_predictions)."""
        if self.task != "diagnosis":
            raise FusionDataError(f"log_probs: a {self.task} model gives risks, not class probabilities")
        logits = self._outputs(ds, present, raw=True)
        if self.model.task == "binary":
            lp = np.stack([-np.logaddexp(0.0, logits[:, 0]), -np.logaddexp(0.0, -logits[:, 0])], axis=1)
        else:
            lp = scaled_log_probs(logits, 1.0)
        none = ~self._presence(ds, present).any(dim=1).numpy()
        if none.any():
            fb = self.model.fallback_prediction.double().numpy()
            prior = fb[:1] if self.model.task == "binary" else fb[: lp.shape[1]][None, :]
            lp[none] = log_probs_from_predictions(prior)[0]
        return lp

    def predict(self, ds: MultimodalDataset, present: np.ndarray | None = None) -> np.ndarray:
        """Diagnosis: calibrated class probabilities softmax(log_probs / T) [n, K] (binary: P(class 1) =
        sigmoid(logit / T)); survival: risk [n] (higher = worse; Cox: log-hazard)."""
        if self.task != "diagnosis":
            return self.raw_predict(ds, present)
        return np.exp(scaled_log_probs(self.log_probs(ds, present), self.temperature))

    @torch.no_grad()
    def embed(self, ds: MultimodalDataset) -> np.ndarray:
        """Fused embedding [n, M * embed_dim]: the model's per-modality embeddings side by side (zeros where a
        modality is absent), for nearest-neighbour search among patients."""
        self.model.eval()
        out = []
        with cpu_threads(1):
            for s in range(0, ds.n_patients, 32):
                rows = np.arange(s, min(s + 32, ds.n_patients))
                z, _ = self.model.encode(ds.to_batch(rows, self.modalities), present=ds.presence(self.modalities)[rows])
                out.append(z.float().reshape(len(rows), -1))
        return torch.cat(out).numpy().astype(np.float64)


def _factory_spec(m: str, f: Any) -> dict:
    if not isinstance(f, partial) or f.args or not isinstance(f.func, type):
        raise FusionConfigError(f"encoder_factories['{m}']: a deployed model rebuilds its encoders by name, so the "
                                f"factory must be functools.partial(SomeModuleClass, **json_options); found {f!r}")
    try:
        json.dumps(f.keywords)
    except TypeError as exc:
        raise FusionConfigError(f"encoder_factories['{m}']: options {f.keywords} are not JSON values") from exc
    return {"target": f"{f.func.__module__}:{f.func.__qualname__}", "kwargs": dict(f.keywords)}


def _factory(spec: dict) -> partial:
    module, name = spec["target"].split(":")
    return partial(getattr(importlib.import_module(module), name), **spec["kwargs"])


def _options_json(opts: ExperimentOptions) -> dict:
    out = {}
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        if f.name != "encoder_factories":
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _weights_sha256(model: FusionModel) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _architecture(model: FusionModel, ds: MultimodalDataset, opts: ExperimentOptions, modalities: list[str]) -> dict:
    factories = {m: _factory_spec(m, f) for m, f in (opts.encoder_factories or {}).items() if m in modalities}
    return {"modalities": modalities, "in_dims": {m: ds.in_dims[m] for m in modalities},
            "strategy": model.strategy_name, "n_outputs": model.n_outputs, "task": model.task,
            "embed_dim": opts.embed_dim, "hidden": opts.hidden, "dropout": opts.dropout,
            "modality_dropout": model.modality_dropout, "bag_modalities": list(model.bag_modalities),
            "encoder_factories": factories}


def _build_model(arch: dict) -> FusionModel:
    return FusionModel(arch["modalities"], arch["in_dims"], arch["strategy"], arch["n_outputs"],
                       embed_dim=arch["embed_dim"], hidden=arch["hidden"], dropout=arch["dropout"],
                       modality_dropout=arch["modality_dropout"], bag_modalities=arch["bag_modalities"],
                       task=arch["task"],
                       encoder_factories={m: _factory(s) for m, s in arch["encoder_factories"].items()})


def _check_same(ds_fit: MultimodalDataset, ds_new: MultimodalDataset) -> float:
    """Largest difference between the engine's fold dataset and the frozen preprocessing's (drift guard)."""
    worst = 0.0
    for m, a in ds_fit.modalities.items():
        b = ds_new.modalities[m]
        va, vb = (a.values, b.values) if not a.is_ragged else (torch.cat(a.values), torch.cat(b.values))
        if va.shape != vb.shape or not torch.equal(a.present, b.present):
            raise FusionDataError(f"deploy: modality '{m}': the frozen preprocessing gives shape {tuple(vb.shape)}, "
                                  f"the engine's fold dataset {tuple(va.shape)}")
        worst = max(worst, float((va - vb).abs().max()) if va.numel() else 0.0)
    return worst


def fit_deployed(data: ExperimentData, results: Sequence[ModelResult], opts: ExperimentOptions, *,
                 run_id: str = "", code_version: str = "", input_hashes: Mapping[str, str] | None = None,
                 n_bins: int = 10) -> DeployedModel:
    """Refit the configuration ``deploy_choice`` picks from ``results`` on every patient of ``data`` (the
    engine's fold preprocessing and TrainConfig via fusion.folds.fit_predict_fold, seed ``opts.seed``) and
    calibrate it: the temperature is fitted on that configuration's out-of-fold predictions (never on the
    refit model's own training predictions). Survival models keep temperature 1.

    Raises FusionConfigError for covariates (a deployed model takes modality inputs only) or a regression
    task; FusionDataError when no neural row exists or the preprocessing drifts from the engine's.
    """
    if data.task not in TASK_OF_KIND:
        raise FusionConfigError(f"task.kind: only {list(TASK_OF_KIND)} models are deployed, found '{data.task}'")
    if data.covariates is not None and data.covariates.shape[1]:
        raise FusionConfigError("covariates: a deployed model takes modality inputs only; drop the spec's covariates")
    rows = [{**r.row(), "extra": r.extra} for r in results]
    strategy, mods, head, why = deploy_choice(rows)
    t0 = datetime.now(timezone.utc)
    _, model, ds, _ = fit_predict_fold(data, list(data.patients), [], opts, strategy, mods, head, opts.seed)
    prep = fit_preprocessing(data, opts, mods)
    drift = _check_same(ds, preprocessed_dataset(prep, raw_inputs(data, mods), data.patients))
    if drift > 1e-4:
        raise FusionDataError(f"deploy: the frozen preprocessing differs from the engine's by {drift:.2e}")
    model.cpu().eval()  # deployed models answer on CPU (a reading room has no GPU to count on)
    task = TASK_OF_KIND[data.task]
    row = next(r for r in results if r.name == why["row"])
    temperature, calib = 1.0, None
    if task == "diagnosis":
        pats, folds, logp = oof_log_probs(row.oof)
        calib = calibration_summary(logp, data.target.loc[pats, "label"].to_numpy(np.int64), folds, n_bins)
        temperature = calib["temperature"]
    n_train = int(ds.presence(mods).any(dim=1).sum())
    info = {"format": FORMAT, "code_version": code_version, "options": _options_json(opts),
            "input_hashes": dict(input_hashes or {}), "calibration": calib,
            "fitted_utc": t0.isoformat(timespec="seconds"),
            "n_patients": len(data.patients), "architecture": _architecture(model, ds, opts, mods),
            "feature_names": {m: p.feature_names for m, p in prep.items() if p.feature_names is not None},
            "preprocessing_drift": drift, "weights_sha256": _weights_sha256(model)}
    version = f"{task}-{t0:%Y%m%dT%H%M%S}-{info['weights_sha256'][:8]}"
    chosen_by = {"run_id": run_id, **why}
    return DeployedModel(task, strategy, mods, head, list(data.classes) if data.classes else None, temperature,
                         version, model, chosen_by, n_train, info, prep)


def save_deployed(dm: DeployedModel, folder: Path) -> Path:
    """Write ``folder/model.pt`` (state_dict + preprocessing arrays) and ``folder/model.json``, atomically:
    into a temp folder beside ``folder``, swapped in only once both files are complete. Returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    meta = {"task": dm.task, "strategy": dm.strategy, "modalities": dm.modalities, "head": dm.head,
            "classes": dm.classes, "temperature": dm.temperature, "version": dm.version, "chosen_by": dm.chosen_by,
            "n_train": dm.n_train, **dm.info,
            "preprocessing": {m: p.kind for m, p in dm.preprocessing.items()}}
    blob = {"state_dict": {k: v.detach().cpu() for k, v in dm.model.state_dict().items()},
            "preprocessing": {m: p.arrays() for m, p in dm.preprocessing.items()}}
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        torch.save(blob, tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(meta, indent=1, default=float))
        os.chmod(tmp, 0o755)
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_deployed(store: Path, task: str) -> DeployedModel:
    """The deployed model of ``task`` ("diagnosis" | "survival") in ``STORE/models/<task>/`` (eval mode, CPU).

    Raises FusionDataError naming the file when it is absent, unreadable or does not fit its description.
    """
    folder = Path(store) / "models" / task
    meta_path, pt_path = folder / "model.json", folder / "model.pt"
    for p in (meta_path, pt_path):
        if not p.is_file():
            raise FusionDataError(f"{p}: no deployed {task} model (a run with deploy_models: true writes it)")
    try:
        meta = json.loads(meta_path.read_text())
        arch = meta["architecture"]
    except (OSError, ValueError, KeyError) as exc:
        raise FusionDataError(f"{meta_path}: unreadable deployed-model description ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise FusionDataError(f"{meta_path}: field 'format' is {meta.get('format')!r}; this code reads format {FORMAT}")
    try:
        blob = torch.load(pt_path, map_location="cpu", weights_only=True)
        model = _build_model(arch)
        model.load_state_dict(blob["state_dict"])
        prep = {m: FrozenPreprocessing.from_arrays(kind, blob["preprocessing"][m],
                                                   (meta.get("feature_names") or {}).get(m))
                for m, kind in meta["preprocessing"].items()}
    except (OSError, RuntimeError, KeyError, ValueError, ImportError, AttributeError, EOFError,
            pickle.UnpicklingError, FusionConfigError) as exc:
        raise FusionDataError(f"{pt_path}: cannot rebuild the deployed {task} model ({exc})") from exc
    model.eval()
    info = {k: v for k, v in meta.items() if k not in ("task", "strategy", "modalities", "head", "classes",
                                                      "temperature", "version", "chosen_by", "n_train",
                                                      "preprocessing")}
    return DeployedModel(meta["task"], meta["strategy"], meta["modalities"], meta["head"], meta["classes"],
                         float(meta["temperature"]), meta["version"], model, meta["chosen_by"], int(meta["n_train"]),
                         info, prep)
