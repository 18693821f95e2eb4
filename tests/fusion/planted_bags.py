"""Planted slide-tile bags: a few 'tumour' instances per bag carry the label, the bag mean does not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion.experiment import ExperimentData


def planted_bags(n: int = 80, d: int = 8, seed: int = 0, flat_shift: float = 0.5, task: str = "classification",
                 no_bag: int = 4, no_flat: int = 4) -> ExperimentData:
    """n patients with a bag modality 'wsi' (20-60 instances of d features) and a flat modality 'expr'.

    Label y (balanced; survival: high-risk group) -> in each bag 2-4 tumour instances (feature 1 = +3, a
    marker attention can find) have feature 0 shifted by 2 * (2y - 1); the other instances' feature 0 is
    shifted the opposite way so that the bag MEAN of every feature carries no label signal. 'expr' is
    weak: its first 2 columns are (2y - 1) * flat_shift + N(0, 1), the other 6 are noise. ``no_bag`` /
    ``no_flat`` patients (disjoint) lack the bag / the flat modality.
    """
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    pats = [f"P{i:03d}" for i in range(n)]
    sign = 2 * y - 1
    bags = {}
    for i, p in enumerate(pats):
        t, k = int(rng.integers(20, 61)), int(rng.integers(2, 5))
        x = rng.normal(size=(t, d))
        x[:k, 1] += 3.0
        x[:k, 0] += 2.0 * sign[i]
        x[k:, 0] -= 2.0 * sign[i] * k / (t - k)
        bags[p] = x[rng.permutation(t)].astype(np.float32)
    expr = rng.normal(size=(n, 8))
    expr[:, :2] += flat_shift * sign[:, None]
    flat = pd.DataFrame(expr, index=pats, columns=[f"g{j}" for j in range(8)])
    lose = rng.permutation(n)
    for p in np.asarray(pats)[lose[:no_bag]]:
        del bags[p]
    flat.loc[np.asarray(pats)[lose[no_bag:no_bag + no_flat]]] = np.nan
    classes = None
    if task == "classification":
        target = pd.DataFrame({"label": y}, index=pats)
        classes = ["low", "high"]
    elif task == "survival":
        t = rng.exponential(np.exp(-1.5 * sign))
        c = rng.exponential(np.quantile(t, 0.8), size=n)
        target = pd.DataFrame({"time": np.minimum(t, c), "event": t <= c}, index=pats)
    else:
        target = pd.DataFrame({"value": sign + 0.3 * rng.normal(size=n)}, index=pats)
    return ExperimentData(patients=pats, features={"expr": flat}, task=task, target=target, classes=classes,
                          bags={"wsi": bags})


def stratified_splits(data: ExperimentData, k: int = 3, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Stratified K-fold over the label (classification), the event (survival) or the value's sign."""
    from sklearn.model_selection import StratifiedKFold

    pats = np.asarray(data.patients)
    t = data.target
    strata = {"classification": lambda: t["label"], "survival": lambda: t["event"].astype(int),
              "regression": lambda: (t["value"] > 0).astype(int)}[data.task]()
    return [(pats[a].tolist(), pats[b].tolist())
            for a, b in StratifiedKFold(k, shuffle=True, random_state=seed).split(pats, np.asarray(strata))]
