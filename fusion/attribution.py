"""Model evidence: per-feature gradient x input attribution (Captum's InputXGradient) and drop-one-modality
contributions."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import InputXGradient

from fusion.data import MultimodalDataset
from fusion.errors import FusionDataError
from fusion.heads import outputs_to_predictions
from fusion.model import FusionModel


def feature_attribution(
    model: FusionModel,
    dataset: MultimodalDataset,
    modality: str,
    idx: Sequence[int] | np.ndarray,
    target: int | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """Mean |gradient x input| per input feature of ``modality`` -> [d] (e.g. per gene of expression).

    Averaged over the patients in ``idx`` that have the modality; for bags the per-instance
    attributions are summed over valid instances first. The gradient is of the model output
    (logit / log-hazard / standardised target); multiclass uses logit ``target`` (default: each
    patient's predicted class). Pass the dataset as the model saw it (standardised), so that
    'input' is in training units. Model in eval mode (no dropout, no modality dropout). Patients are
    processed `chunk` at a time (the same result; memory bounded by the chunk's largest bag).
    """
    if modality not in model.modalities:
        raise FusionDataError(f"feature_attribution: model has no modality '{modality}'; it has {model.modalities}")
    model.eval()
    device = next(model.parameters()).device
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    present = dataset.modalities[modality].present.numpy()[idx]
    rows = idx[present]
    if rows.size == 0:
        raise FusionDataError(f"feature_attribution: no patient in idx has modality '{modality}'")
    total = None
    for start in range(0, len(rows), chunk):  # chunks: bags are padded per chunk, not to the cohort's largest
        batch = dataset.to_batch(rows[start : start + chunk], model.modalities, device=device)
        gxi = input_x_gradient(model, batch, modality, target).abs()
        if gxi.dim() == 3:
            mask = batch[modality]["mask"]
            gxi = (gxi * mask.unsqueeze(-1).to(gxi.dtype)).sum(dim=1)
        part = gxi.sum(dim=0).detach().cpu().double()
        total = part if total is None else total + part
    return (total / len(rows)).numpy()


def input_x_gradient(model: FusionModel, batch: dict, modality: str, target: int | None = None) -> torch.Tensor:
    """Captum InputXGradient of the model output w.r.t. ``batch[modality]['values']``: signed gradient x input,
    the shape of the values ([B, d] or [B, T, d]; padded instances included, callers mask them).

    The output is the logit / log-hazard / standardised target (one output), or for multiclass the logit of
    class ``target`` (default: each sample's predicted class). Model in eval mode.
    """
    others = {m: parts for m, parts in batch.items() if m != modality}

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model({**others, modality: {**batch[modality], "values": x}}).float()

    x = batch[modality]["values"]
    if model.n_outputs == 1:
        cls = 0
    elif target is None:
        with torch.no_grad():
            cls = forward(x).argmax(dim=1)
    else:
        cls = int(target)
    return InputXGradient(forward).attribute(x.detach().clone().requires_grad_(True), target=cls)


@torch.no_grad()
def modality_contribution(model: FusionModel, dataset: MultimodalDataset, idx: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Drop-one-modality analysis: mean |change in prediction| when each modality is marked absent.

    Prediction = probability (binary/multiclass, summed over classes), target or log-hazard.
    Only patients with the modality and at least one other modality count. Columns:
    modality, mean_abs_change, n_patients.
    """
    model.eval()
    device = next(model.parameters()).device
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    batch = dataset.to_batch(idx, model.modalities, device=device)
    present = model.presence(batch)
    full = outputs_to_predictions(model.task, model(batch, present=present))
    rows = []
    for j, m in enumerate(model.modalities):
        reduced = present.clone()
        reduced[:, j] = False
        eligible = present[:, j] & reduced.any(dim=1)
        if not bool(eligible.any()):
            rows.append({"modality": m, "mean_abs_change": float("nan"), "n_patients": 0})
            continue
        drop = outputs_to_predictions(model.task, model(batch, present=reduced))
        change = (full - drop).abs().reshape(len(idx), -1).sum(dim=1)[eligible]
        rows.append({"modality": m, "mean_abs_change": float(change.mean()), "n_patients": int(eligible.sum())})
    return pd.DataFrame(rows, columns=["modality", "mean_abs_change", "n_patients"])
