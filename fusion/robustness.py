"""Missing-modality robustness: a trained model's metric when modalities are dropped at test time."""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch

from fusion.data import ModalityData, MultimodalDataset
from fusion.model import FusionModel
from fusion.train import predict


def drop_modalities(ds: MultimodalDataset, names: Sequence[str]) -> MultimodalDataset:
    """The same dataset with modalities ``names`` marked absent (values zeroed) for every patient."""
    mods = {}
    for k, m in ds.modalities.items():
        if k in names and m.is_ragged:
            mods[k] = ModalityData(k, [torch.zeros(0, m.dim) for _ in m.values], torch.zeros_like(m.present),
                                   feature_names=m.feature_names)
        elif k in names:
            mods[k] = ModalityData(k, torch.zeros_like(m.values), torch.zeros_like(m.present), m.instance_mask,
                                   m.feature_names)
        else:
            mods[k] = m
    return MultimodalDataset(patients=ds.patients, modalities=mods, y=ds.y, meta=ds.meta)


def robustness_curve(model: FusionModel, ds: MultimodalDataset, idx: np.ndarray,
                     score: Callable[[np.ndarray], float]) -> dict:
    """Metric against the fraction of the model's modalities dropped at test time (mean over every subset
    of that size, at least one modality kept), and each modality's drop-one contribution
    (metric with all - metric without it).

    Returns {'curve': {fraction: metric}, 'contributions': {modality: delta}}.
    """
    mods = list(model.modalities)
    full = score(predict(model, ds, idx))
    curve = {0.0: full}
    without = {}
    for k in range(1, len(mods)):
        vals = []
        for drop in itertools.combinations(mods, k):
            v = score(predict(model, drop_modalities(ds, drop), idx))
            vals.append(v)
            if k == 1:
                without[drop[0]] = v
        curve[round(k / len(mods), 4)] = float(np.mean(vals))
    return {"curve": curve, "contributions": {m: float(full - without[m]) for m in mods}}
