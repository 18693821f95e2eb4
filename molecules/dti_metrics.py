"""Affinity-prediction metrics as DeepDTA / GraphDTA report them: concordance index, MSE, Pearson r."""

from __future__ import annotations

import numpy as np

from fusion.errors import MoleculeError

__all__ = ["concordance_index", "mse", "pearson", "dti_metrics"]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise MoleculeError(f"metrics: y_true has {y.size} values and y_pred {p.size}; expected the same, > 0")
    return y, p


def concordance_index(y_true, y_pred, chunk: int = 2048) -> float:
    """CI: over all pairs with y_i > y_j, the share with p_i > p_j (ties in p count 1/2); DeepDTA's get_cindex.

    Vectorised in row chunks (memory chunk * n); NaN when no pair has different true values.
    """
    y, p = _pair(y_true, y_pred)
    concordant, pairs = 0.0, 0
    for start in range(0, y.size, chunk):
        yi, pi = y[start:start + chunk, None], p[start:start + chunk, None]
        ordered = yi > y[None, :]
        dp = pi - p[None, :]
        concordant += float(np.sum(ordered & (dp > 0)) + 0.5 * np.sum(ordered & (dp == 0)))
        pairs += int(ordered.sum())
    return concordant / pairs if pairs else float("nan")


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
    return {"ci": concordance_index(y_true, y_pred), "mse": mse(y_true, y_pred), "pearson": pearson(y_true, y_pred)}
