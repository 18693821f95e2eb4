"""The run's deployable models: the configuration the experiment engine's ``best`` selection chose (else the row
with the highest cross-validated mean), refit on every labelled patient with the engine's own preprocessing and
training, calibrated on the experiment's out-of-fold predictions, saved with its version and read back for new
patients. Neural rows deploy a FusionModel (here); classical rows (baseline, experts) a set of linear models
(fusion.deploy_classical), with the same interface: ``dataset``, ``predict``, ``log_probs``, ``embed``,
``shapley``, ``presence``.

A deployed model is a folder ``STORE/models/<task>/`` holding ``model.json`` (what it is, how it was chosen and
fitted, its calibration; ``kind``: "neural" or "classical") and ``model.pt`` (neural: the FusionModel's
state_dict and the preprocessing arrays) or ``model.npz`` (classical: plain arrays, see fusion.deploy_classical).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from fusion.calibration import calibration_summary, oof_log_probs
from fusion.deploy_classical import CLASSICAL, DeployedClassical, load_classical, save_classical
from fusion.deploy_classical_fit import fit_classical
from fusion.deploy_neural import DeployedModel, architecture, build_model, check_same, weights_sha256
from fusion.deploy_preprocess import (FrozenPreprocessing, fit_preprocessing, preprocessed_dataset,  # noqa: F401
                                      raw_inputs)
from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment_data import ExperimentData, ExperimentOptions, ModelResult
from fusion.folds import fit_predict_fold
from fusion.tuning import tuned_options

TASK_OF_KIND = {"classification": "diagnosis", "survival": "survival"}
NOT_A_MODEL = ("best", "published")
FORMAT = 1  # model.json "format": bump when the folder's layout changes


def _is_model(row: dict) -> bool:
    return row.get("strategy") not in NOT_A_MODEL and bool(row.get("folds"))


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
    model row (neural or classical: baseline, experts) with the highest mean. A '+select' row deploys the
    modality subset its inner CV picked most often. ``why``: {"row", "best_row_choices", "reason", "metric",
    "mean"}. Raises FusionDataError when no model row exists or a chosen name is not among the rows.
    """
    by_name = {r["name"]: r for r in rows}
    models = [r for r in rows if _is_model(r)]
    if not models:
        raise FusionDataError(f"deploy_choice: no model among the rows {[r.get('name') for r in rows]}")
    top = max(models, key=lambda r: r["mean"])
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
        if not _is_model(row):
            reason += f"; '{pick}' is not a fitted model: deployed the row with the highest mean '{top['name']}'"
            row = top
    else:
        reason = "no best-selection row: deployed the row with the highest mean"
        row = top
    strategy, mods, head, note = _configuration(row)
    if strategy in CLASSICAL:
        reason += f" (a classical model: {strategy})"
    why = {"row": row["name"], "best_row_choices": choices, "reason": reason + note,
           "metric": row.get("metric"), "mean": float(row["mean"])}
    return strategy, mods, head, why


def _options_json(opts: ExperimentOptions) -> dict:
    out = {}
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        if f.name != "encoder_factories":
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _calibration(task: str, row: ModelResult, data: ExperimentData, n_bins: int) -> tuple[float, dict | None]:
    """(temperature, calibration summary) from the chosen row's out-of-fold predictions (diagnosis only)."""
    if task != "diagnosis":
        return 1.0, None
    pats, folds, logp = oof_log_probs(row.oof)
    calib = calibration_summary(logp, data.target.loc[pats, "label"].to_numpy(np.int64), folds, n_bins)
    return calib["temperature"], calib


def fit_deployed(data: ExperimentData, results: Sequence[ModelResult], opts: ExperimentOptions, *,
                 run_id: str = "", code_version: str = "", input_hashes: Mapping[str, str] | None = None,
                 n_bins: int = 10) -> DeployedModel | DeployedClassical:
    """Refit the configuration ``deploy_choice`` picks from ``results`` on every patient of ``data`` and
    calibrate it: the temperature is fitted on that configuration's out-of-fold predictions (never on the
    refit model's own training predictions). Survival models keep temperature 1. A neural row is refit with
    the engine's fold preprocessing and TrainConfig (fusion.folds.fit_predict_fold, seed ``opts.seed``) and the
    strategy's options as its CV fitted it (fusion.tuning.tuned_options: its overrides, and its option grid
    chosen by inner CV on every patient; model.json ``tuning``), a classical one (baseline, experts) with the
    engine's classical functions (fusion.deploy_classical_fit).

    Raises FusionConfigError for covariates (a deployed model takes modality inputs only) or a regression
    task; FusionDataError when no model row exists or the refit drifts from the engine's.
    """
    if data.task not in TASK_OF_KIND:
        raise FusionConfigError(f"task.kind: only {list(TASK_OF_KIND)} models are deployed, found '{data.task}'")
    if data.covariates is not None and data.covariates.shape[1]:
        raise FusionConfigError("covariates: a deployed model takes modality inputs only; drop the spec's covariates")
    rows = [{**r.row(), "extra": r.extra} for r in results]
    strategy, mods, head, why = deploy_choice(rows)
    t0 = datetime.now(timezone.utc)
    task = TASK_OF_KIND[data.task]
    temperature, calib = _calibration(task, next(r for r in results if r.name == why["row"]), data, n_bins)
    common = {"format": FORMAT, "code_version": code_version, "options": _options_json(opts),
              "input_hashes": dict(input_hashes or {}), "calibration": calib,
              "fitted_utc": t0.isoformat(timespec="seconds"), "n_patients": len(data.patients)}
    chosen_by = {"run_id": run_id, **why}
    classes = list(data.classes) if data.classes else None
    if strategy in CLASSICAL:
        parts, extra = fit_classical(data, strategy, mods, opts)
        info = {**common, "kind": "classical", **extra}
        info["weights_sha256"] = _arrays_sha256([a for p in parts for a in p.arrays("").values()])
        version = f"{task}-{t0:%Y%m%dT%H%M%S}-{info['weights_sha256'][:8]}"
        n_train = int(np.any([~np.isnan(m).all(axis=1) for m in _raw_matrices(data, mods)], axis=0).sum())
        return DeployedClassical(task, strategy, mods, head, classes, temperature, version, parts, chosen_by,
                                 n_train, info)
    # the strategy's own options as the engine's CV fits it (fusion.tuning: overrides, and a grid chosen by inner
    # CV, here on every patient)
    run_opts, tuning = tuned_options(data, list(data.patients), opts, strategy, mods, head, opts.seed)
    _, model, ds, _ = fit_predict_fold(data, list(data.patients), [], run_opts, strategy, mods, head, opts.seed)
    prep = fit_preprocessing(data, run_opts, mods)
    drift = check_same(ds, preprocessed_dataset(prep, raw_inputs(data, mods), data.patients))
    if drift > 1e-4:
        raise FusionDataError(f"deploy: the frozen preprocessing differs from the engine's by {drift:.2e}")
    model.cpu().eval()  # deployed models answer on CPU (a reading room has no GPU to count on)
    n_train = int(ds.presence(mods).any(dim=1).sum())
    info = {**common, "kind": "neural", "options": _options_json(run_opts), "tuning": tuning,
            "architecture": architecture(model, ds, run_opts, mods),
            "feature_names": {m: p.feature_names for m, p in prep.items() if p.feature_names is not None},
            "preprocessing_drift": drift, "weights_sha256": weights_sha256(model)}
    version = f"{task}-{t0:%Y%m%dT%H%M%S}-{info['weights_sha256'][:8]}"
    return DeployedModel(task, strategy, mods, head, classes, temperature, version, model, chosen_by, n_train, info,
                         prep)


def _raw_matrices(data: ExperimentData, mods: Sequence[str]) -> list[np.ndarray]:
    return [(data.bag_means(m) if m in (data.bags or {}) else data.features[m]).to_numpy(np.float64) for m in mods]


def _arrays_sha256(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _swap_in(folder: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temp folder beside ``folder`` and swap it in only once it returned (atomic)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def save_deployed(dm: DeployedModel | DeployedClassical, folder: Path) -> Path:
    """Write ``folder/model.json`` and ``folder/model.pt`` (neural: state_dict + preprocessing arrays) or
    ``folder/model.npz`` (classical), atomically: into a temp folder beside ``folder``, swapped in only once
    both files are complete. Returns ``folder``."""
    meta = {"task": dm.task, "strategy": dm.strategy, "modalities": dm.modalities, "head": dm.head,
            "classes": dm.classes, "temperature": dm.temperature, "version": dm.version, "chosen_by": dm.chosen_by,
            "n_train": dm.n_train, **dm.info, "kind": dm.kind}
    if isinstance(dm, DeployedClassical):
        return _swap_in(folder, lambda tmp: save_classical(dm, tmp, meta))
    meta["preprocessing"] = {m: p.kind for m, p in dm.preprocessing.items()}
    blob = {"state_dict": {k: v.detach().cpu() for k, v in dm.model.state_dict().items()},
            "preprocessing": {m: p.arrays() for m, p in dm.preprocessing.items()}}

    def write(tmp: Path) -> None:
        torch.save(blob, tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(meta, indent=1, default=float))

    return _swap_in(folder, write)


def load_deployed(store: Path, task: str) -> DeployedModel | DeployedClassical:
    """The deployed model of ``task`` ("diagnosis" | "survival") in ``STORE/models/<task>/`` (neural: eval mode,
    CPU; classical: fusion.deploy_classical.DeployedClassical).

    Raises FusionDataError naming the file when it is absent, unreadable or does not fit its description.
    """
    folder = Path(store) / "models" / task
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise FusionDataError(f"{meta_path}: no deployed {task} model (a run with deploy_models: true writes it)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise FusionDataError(f"{meta_path}: unreadable deployed-model description ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise FusionDataError(f"{meta_path}: field 'format' is {meta.get('format')!r}; this code reads format {FORMAT}")
    if meta.get("kind") == "classical":
        return load_classical(meta, folder)
    pt_path = folder / "model.pt"
    if not pt_path.is_file():
        raise FusionDataError(f"{pt_path}: no deployed {task} model (a run with deploy_models: true writes it)")
    try:
        arch = meta["architecture"]
        blob = torch.load(pt_path, map_location="cpu", weights_only=True)
        model = build_model(arch)
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
                                                      "preprocessing", "kind")}
    return DeployedModel(meta["task"], meta["strategy"], meta["modalities"], meta["head"], meta["classes"],
                         float(meta["temperature"]), meta["version"], model, meta["chosen_by"], int(meta["n_train"]),
                         info, prep)
