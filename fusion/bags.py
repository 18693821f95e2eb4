"""Instance-bag modalities of the experiment engine (e.g. slide tiles): validation, per-fold instance
preprocessing fitted on the training patients only, and per-patient bag means for the classical baseline."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fusion.data import ModalityData
from fusion.errors import FusionDataError
from fusion.preprocess import FoldPreprocessor


def checked_bags(name: str, bags: Mapping[str, np.ndarray], patients: Sequence[str]) -> dict[str, np.ndarray]:
    """The non-empty bags of ``patients`` as float32 [T, d] arrays with one d (FusionDataError otherwise)."""
    keep, dims = {}, set()
    wanted = {str(p) for p in patients}
    for p, b in bags.items():
        if str(p) not in wanted or b is None:
            continue
        a = np.asarray(b, dtype=np.float32)
        if a.ndim != 2:
            raise FusionDataError(f"bag modality '{name}', patient '{p}': expected instances [T, d], "
                                  f"found shape {a.shape}")
        if a.shape[0]:
            keep[str(p)] = a
            dims.add(a.shape[1])
    if len(dims) > 1:
        raise FusionDataError(f"bag modality '{name}': bags need one feature dimension, found {sorted(dims)}")
    if not keep:
        raise FusionDataError(f"bag modality '{name}': no patient of the experiment has a non-empty bag")
    return keep


def bag_means(name: str, bags: Mapping[str, np.ndarray], patients: Sequence[str]) -> pd.DataFrame:
    """Per-patient mean instance [n_patients, d] (columns ``<name>_mean_<k>``; NaN row where the bag is absent)."""
    d = next(iter(bags.values())).shape[1]
    x = np.full((len(patients), d), np.nan)
    for i, p in enumerate(patients):
        if p in bags:
            x[i] = bags[p].mean(axis=0, dtype=np.float64)
    return pd.DataFrame(x, index=list(patients), columns=[f"{name}_mean_{k}" for k in range(d)])


def training_instances(train_bags: Sequence[np.ndarray], max_instances: int, seed: int) -> np.ndarray:
    """The training instances [n, d] that fit the preprocessing: all of them, or ``max_instances`` drawn at
    random without replacement (bounds memory for slides of thousands of tiles)."""
    sizes = np.array([b.shape[0] for b in train_bags])
    total = int(sizes.sum())
    if total <= max_instances:
        return np.concatenate(train_bags, axis=0)
    pick = np.random.default_rng(seed).choice(total, max_instances, replace=False)
    owner = np.searchsorted(np.cumsum(sizes), pick, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate([train_bags[o][np.sort(pick[owner == o] - starts[o])] for o in np.unique(owner)], axis=0)


def fold_bags(name: str, bags: Mapping[str, np.ndarray], pats: Sequence[str], n_tr: int,
              n_components: int | None, max_instances: int, seed: int) -> ModalityData:
    """Ragged bags of ``pats`` (absent: empty) preprocessed (z-score, optional PCA to ``n_components``) with
    statistics of the instances of the first ``n_tr`` patients (the training fold) only."""
    train_bags = [bags[p] for p in pats[:n_tr] if p in bags]
    if len(train_bags) < 2:
        raise FusionDataError(f"bag modality '{name}': fewer than 2 training patients have a bag in this fold")
    pre = FoldPreprocessor(None, n_components, seed).fit(training_instances(train_bags, max_instances, seed))
    return ModalityData.from_bags(name, [pre.transform(bags[p]) if p in bags else None for p in pats])
