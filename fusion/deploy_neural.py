"""The neural deployed model: a FusionModel refit on every training patient with its frozen preprocessing
(fusion.deploy_preprocess), its architecture as JSON (rebuilt by name on load) and the checks that the frozen
preprocessing equals the engine's fold preprocessing. fusion.deploy fits, saves and loads it."""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch

from fusion.calibration import log_probs_from_predictions, scaled_log_probs
from fusion.data import MultimodalDataset
from fusion.deploy_preprocess import FrozenPreprocessing, preprocessed_dataset
from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment_data import ExperimentOptions
from fusion.model import FusionModel
from fusion.train import cpu_threads, predict as model_predict


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
    kind: str = "neural"

    @property
    def risk_unit(self) -> str:
        """What a survival risk is (fusion.heads: a log-hazard for the Cox head, -sum of survival for 'nll')."""
        return "negative summed survival" if self.model.task == "survival_nll" else "log-hazard"

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

    def presence(self, ds: MultimodalDataset) -> np.ndarray:
        """Bool [n, M]: which of the model's modalities each patient has."""
        return ds.presence(self.modalities).numpy()

    def shapley(self, ds: MultimodalDataset, index: int, target: int | None = None) -> dict:
        """Exact modality Shapley values of patient ``index``'s calibrated probability (diagnosis) or risk
        (fusion.explain.fusion_model_shapley: an absent modality is the model's own missing-modality input)."""
        from fusion.explain import fusion_model_shapley

        return fusion_model_shapley(self.model, ds, index, target=target, temperature=float(self.temperature))

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


def factory_spec(f: Any, what: str) -> dict:
    """{"target": "module:Class", "kwargs": {...}} of ``functools.partial(Class, **json_options)``, so that a saved
    model rebuilds the module by name (``factory``); ``what`` names it in the error (e.g. "encoder_factories['wsi']")."""
    if not isinstance(f, partial) or f.args or not isinstance(f.func, type):
        raise FusionConfigError(f"{what}: a saved model rebuilds its encoders by name, so the factory must be "
                                f"functools.partial(SomeModuleClass, **json_options); found {f!r}")
    try:
        json.dumps(f.keywords)
    except TypeError as exc:
        raise FusionConfigError(f"{what}: options {f.keywords} are not JSON values") from exc
    return {"target": f"{f.func.__module__}:{f.func.__qualname__}", "kwargs": dict(f.keywords)}


def factory(spec: Mapping[str, Any]) -> partial:
    """The partial that ``factory_spec`` described."""
    module, name = str(spec["target"]).split(":")
    return partial(getattr(importlib.import_module(module), name), **spec["kwargs"])


def weights_sha256(model: FusionModel) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def architecture(model: FusionModel, ds: MultimodalDataset, opts: ExperimentOptions, modalities: list[str]) -> dict:
    factories = {m: factory_spec(f, f"encoder_factories['{m}']") for m, f in (opts.encoder_factories or {}).items() if m in modalities}
    return {"modalities": modalities, "in_dims": {m: ds.in_dims[m] for m in modalities},
            "strategy": model.strategy_name, "n_outputs": model.n_outputs, "task": model.task,
            "embed_dim": opts.embed_dim, "hidden": opts.hidden, "dropout": opts.dropout,
            "modality_dropout": model.modality_dropout, "bag_modalities": list(model.bag_modalities),
            "encoder_factories": factories}


def build_model(arch: dict) -> FusionModel:
    return FusionModel(arch["modalities"], arch["in_dims"], arch["strategy"], arch["n_outputs"],
                       embed_dim=arch["embed_dim"], hidden=arch["hidden"], dropout=arch["dropout"],
                       modality_dropout=arch["modality_dropout"], bag_modalities=arch["bag_modalities"],
                       task=arch["task"],
                       encoder_factories={m: factory(s) for m, s in arch["encoder_factories"].items()})


def check_same(ds_fit: MultimodalDataset, ds_new: MultimodalDataset) -> float:
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
