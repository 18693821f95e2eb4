"""Planted feature tables for the experiment-engine tests: modality 'a' carries the signal, 'b' is noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion.experiment import ExperimentData


def planted_table(task: str, n: int = 150, d: int = 30, seed: int = 0, strength: float = 1.5,
                  shuffle: bool = False, n_classes: int = 3) -> ExperimentData:
    """n patients, modalities a (signal in its first 3 columns) and b (pure noise), d columns each.

    survival: log-hazard = strength * s, exponential times, ~30% censored; classification: class
    c shifts s by strength * c; regression: value = s + noise. ``shuffle`` permutes the target.
    """
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n)
    a = rng.normal(size=(n, d))
    a[:, :3] += s[:, None] * 2.0
    b = rng.normal(size=(n, d))
    pats = [f"P{i:04d}" for i in range(n)]
    classes = None
    if task == "survival":
        t = rng.exponential(np.exp(-strength * s))
        c = rng.exponential(np.quantile(t, 0.8), size=n)
        target = pd.DataFrame({"time": np.minimum(t, c), "event": t <= c}, index=pats)
    elif task == "classification":
        y = rng.integers(0, n_classes, size=n)
        a[:, :3] += strength * y[:, None] - s[:, None] * 2.0
        target = pd.DataFrame({"label": y}, index=pats)
        classes = [f"class{c}" for c in range(n_classes)]
    else:
        target = pd.DataFrame({"value": s + 0.3 * rng.normal(size=n)}, index=pats)
    if shuffle:
        target = pd.DataFrame(target.to_numpy()[rng.permutation(n)], index=pats, columns=target.columns).astype(
            target.dtypes.to_dict())
    feats = {"a": pd.DataFrame(a, index=pats, columns=[f"a{j}" for j in range(d)]),
             "b": pd.DataFrame(b, index=pats, columns=[f"b{j}" for j in range(d)])}
    return ExperimentData(patients=pats, features=feats, task=task, target=target, classes=classes)


def kfold_splits(data: ExperimentData, k: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Plain shuffled K-fold over the patients."""
    rng = np.random.default_rng(seed)
    order = np.asarray(data.patients)[rng.permutation(len(data.patients))]
    parts = np.array_split(order, k)
    return [([p for j, q in enumerate(parts) if j != i for p in q], list(parts[i])) for i in range(k)]
