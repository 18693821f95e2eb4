"""Activity models on disk (versioned by a hash of weights + config), evaluation on a split, library scoring."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rdkit import Chem, rdBase

from fusion.errors import MoleculeError
from molecules.activity import ActivityConfig, ActivityModel, fit_activity, predict_pairs, predict_table
from molecules.conformal import (DEFAULT_NOMINAL, calibration_mask, calibration_scores, conformal_halfwidth,
                                 coverage, intervals)
from molecules.dti_data import DTITable, split_mask
from molecules.dti_metrics import dti_metrics

__all__ = ["model_version", "save_activity_model", "load_activity_model", "evaluate_activity", "score_compounds",
           "fit_calibrated", "CALIBRATION_FRACTION"]

CALIBRATION_FRACTION = 0.1  # share of the training pairs held out to calibrate the conformal intervals


def model_version(model: ActivityModel) -> str:
    """12 hex digits of SHA-256 over the config (JSON) and every weight tensor (name, dtype, bytes)."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    if model.calibration is not None:  # the intervals are part of what the model says
        h.update(np.ascontiguousarray(model.calibration, dtype=np.float64).tobytes())
    if model.activity_types:
        h.update(json.dumps(list(model.activity_types)).encode())
    return h.hexdigest()[:12]


def fit_calibrated(table: DTITable, config: ActivityConfig = ActivityConfig(), device: str | torch.device | None = None,
                   fraction: float = CALIBRATION_FRACTION, seed: int = 0, log_every: int = 0) -> ActivityModel:
    """Fit on a random (1 - fraction) of the pairs and keep the held-out pairs' sorted absolute residuals
    (``model.calibration``) for split-conformal intervals (molecules.conformal)."""
    cal = calibration_mask(len(table), fraction, seed)
    model = fit_activity(table.subset(~cal), config, device, log_every=log_every)
    cal_table = table.subset(cal)
    model.calibration = calibration_scores(cal_table.value, predict_table(model, cal_table))
    return model


def save_activity_model(model: ActivityModel, path: str | Path, extra: dict | None = None) -> str:
    """Write the model (weights, config, drug / target vocabularies, sequences) atomically; returns its version."""
    path = Path(path)
    model.version = model_version(model)
    payload = {
        "format": "fusionrx-activity-1", "version": model.version, "config": model.config.to_dict(),
        "drugs": model.drugs, "targets": model.targets, "sequences": model.sequences,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra or {},
        "activity_types": list(model.activity_types),
        "calibration": None if model.calibration is None else torch.as_tensor(model.calibration),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model.version


def load_activity_model(path: str | Path, device: str | torch.device = "cpu") -> ActivityModel:
    """Read a model written by save_activity_model; MoleculeError names the file when it is not one."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, OSError) for a bad file
        raise MoleculeError(f"{path}: not a readable activity model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "fusionrx-activity-1":
        raise MoleculeError(f"{path}: field 'format': expected 'fusionrx-activity-1', "
                            f"found {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}")
    model = ActivityModel(ActivityConfig.from_dict(payload["config"]), payload["drugs"], payload["targets"],
                          payload["sequences"])
    model.load_state_dict(payload["state_dict"])
    model.activity_types = tuple(payload.get("activity_types") or ())
    cal = payload.get("calibration")
    model.calibration = None if cal is None else cal.numpy().astype(np.float64)
    model.version = payload["version"]
    if model_version(model) != model.version:
        raise MoleculeError(f"{path}: field 'version': recorded {model.version}, weights hash to {model_version(model)}")
    return model.to(device).eval()


def evaluate_activity(table: DTITable, split: str | None = None, config: ActivityConfig = ActivityConfig(),
                      device: str | None = None, seed: int = 0, test_fraction: float = 0.2,
                      nominal: float = DEFAULT_NOMINAL, calibration_fraction: float = CALIBRATION_FRACTION) -> dict:
    """Train on the train pairs (less a calibration share), score the test pairs.

    Returns {ci, mse, pearson, n_train, n_test, split, train_s, nominal, coverage, interval_halfwidth,
    n_calibration, activity_types}: ``coverage`` is the share of test pairs inside their split-conformal
    interval at ``nominal``. ``split`` None uses the table's own train/test column when it has one, else
    'random'.
    """
    if split is None and table.split is not None:
        test, split = table.split == "test", "given"
    else:
        split = split or "random"
        test = split_mask(table, split, test_fraction, seed)
    if test.all() or not test.any():
        raise MoleculeError(f"{table.source}: split {split!r} leaves {int((~test).sum())} train and "
                            f"{int(test.sum())} test pairs; expected both > 0")
    train_table, test_table = table.subset(~test), table.subset(test)
    t0 = time.perf_counter()
    model = fit_calibrated(train_table, config, device, calibration_fraction, seed)
    train_s = time.perf_counter() - t0
    pred = predict_table(model, test_table)
    lo, hi = intervals(pred, model.calibration, nominal)
    return {**dti_metrics(test_table.value, pred), "n_train": int((~test).sum()) - len(model.calibration),
            "n_test": int(test.sum()), "split": split, "train_s": round(train_s, 1), "nominal": nominal,
            "coverage": coverage(test_table.value, lo, hi),
            "interval_halfwidth": conformal_halfwidth(model.calibration, nominal),
            "n_calibration": len(model.calibration), "activity_types": list(table.activity_types)}


def score_compounds(model_path: str | Path, smiles: Sequence[str], targets: Sequence[str],
                    sequences: dict[str, str] | None = None, device: str = "cpu",
                    nominal: float = DEFAULT_NOMINAL) -> pd.DataFrame:
    """Predicted activity of every compound against every target (all pairs).

    Returns one row per (compound, target): ``smiles`` (as given), ``target``, ``predicted``
    (pKd / pChEMBL units of the training table, -log10 M), ``lower`` / ``upper`` (the split-conformal
    interval at ``nominal``; NaN for a model saved without calibration), ``activity_type`` (what the
    model was trained on, ';'-joined) and ``model_version``. SMILES that do
    not parse are left out and listed in ``df.attrs['skipped']``. Targets unseen in training need
    a sequence (``sequences[target]``) when the model has a sequence encoder; else MoleculeError.
    """
    model = load_activity_model(model_path, device)
    good, skipped = [], []
    for s in smiles:
        with rdBase.BlockLogs():
            ok = isinstance(s, str) and Chem.MolFromSmiles(s) is not None
        (good if ok else skipped).append(s)
    targets = list(dict.fromkeys(targets))
    n_d, n_t = len(good), len(targets)
    drug_idx = np.repeat(np.arange(n_d), n_t)
    target_idx = np.tile(np.arange(n_t), n_d)
    pred = predict_pairs(model, good, targets, drug_idx, target_idx, sequences) if n_d and n_t else np.zeros(0)
    df = pd.DataFrame({"smiles": np.asarray(good, dtype=object)[drug_idx] if n_d else [],
                       "target": np.asarray(targets, dtype=object)[target_idx] if n_t else [],
                       "predicted": pred})
    if model.calibration is not None:
        df["lower"], df["upper"] = intervals(pred, model.calibration, nominal)
    else:
        df["lower"] = df["upper"] = np.nan
    df["activity_type"] = ";".join(model.activity_types)
    df["model_version"] = model.version
    df.attrs["skipped"] = skipped
    return df
