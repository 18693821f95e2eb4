"""Affinity-prediction metrics as DeepDTA / GraphDTA report them: concordance index, MSE, Pearson r.

DeepDTA's CI (``get_cindex``: over all pairs with y_i > y_j, the share with p_i > p_j, ties in p counting 1/2)
is Harrell's c-index with every "event" observed, time = -affinity and risk = prediction: pairs with equal
affinities are not comparable in either. It is therefore computed by the one c-index, ``fusion.metrics.c_index``.
"""

from __future__ import annotations

import numpy as np

from fusion.errors import MoleculeError
from fusion.metrics import c_index

__all__ = ["affinity_ci", "dti_metrics", "mse", "pearson"]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise MoleculeError(f"metrics: y_true has {y.size} values and y_pred {p.size}; expected the same, > 0")
    return y, p


def affinity_ci(y_true, y_pred) -> float:
    """DeepDTA concordance index of predicted vs true affinities (0.5 = random); NaN when every y is equal."""
    y, p = _pair(y_true, y_pred)
    if np.ptp(y) == 0:
        return float("nan")
    return c_index(-y, np.ones(y.size, dtype=bool), p)


def mse(y_true, y_pred) -> float:
    """Mean squared error (units of y squared)."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean((y - p) ** 2))


def pearson(y_true, y_pred) -> float:
    """Pearson correlation; NaN when either side is constant."""
    y, p = _pair(y_true, y_pred)
    if y.std() == 0 or p.std() == 0:
        return float("nan")
    return float(np.corrcoef(y, p)[0, 1])


def dti_metrics(y_true, y_pred) -> dict[str, float]:
    """{'ci', 'mse', 'pearson'} of one set of predictions."""
    return {"ci": affinity_ci(y_true, y_pred), "mse": mse(y_true, y_pred), "pearson": pearson(y_true, y_pred)}
