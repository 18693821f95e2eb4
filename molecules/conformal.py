"""Split conformal prediction intervals for regression (absolute-residual score).

A model trained on a proper training split is scored on a held-out calibration split; the sorted
absolute residuals |y - p| of the calibration pairs are kept with the model. For a nominal level
1 - alpha the interval half-width is the ceil((n + 1)(1 - alpha))-th smallest residual (Vovk et al.,
Lei et al. 2018): for pairs exchangeable with the calibration pairs (a random split) the interval
[p - q, p + q] covers the true value with probability >= 1 - alpha (and < 1 - alpha + 1 / (n + 1)).
Cold splits (new drugs, new scaffolds) are not exchangeable with a random calibration split; their
coverage is measured, not guaranteed.
"""

from __future__ import annotations

import math

import numpy as np

from fusion.errors import MoleculeError

__all__ = ["DEFAULT_NOMINAL", "calibration_scores", "conformal_halfwidth", "intervals", "coverage",
           "calibration_mask"]

DEFAULT_NOMINAL = 0.9


def calibration_scores(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Sorted absolute residuals (n,) float64 of the calibration pairs (the conformity scores)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0 or not np.all(np.isfinite(p)):
        raise MoleculeError(f"conformal calibration: {y.size} values and {p.size} finite predictions expected, "
                            "same length > 0")
    return np.sort(np.abs(y - p))


def conformal_halfwidth(scores: np.ndarray, nominal: float = DEFAULT_NOMINAL) -> float:
    """Half-width q of the nominal-level interval from sorted calibration scores (inf when n is too small)."""
    if not 0.0 < nominal < 1.0:
        raise MoleculeError(f"conformal nominal level: expected a number in (0, 1), found {nominal!r}")
    s = np.asarray(scores, dtype=np.float64)
    k = math.ceil((s.size + 1) * nominal)  # rank of the order statistic (1-based)
    if s.size == 0 or k > s.size:
        return float("inf")
    return float(np.sort(s)[k - 1])


def intervals(pred: np.ndarray, scores: np.ndarray, nominal: float = DEFAULT_NOMINAL) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) arrays of the nominal-level split-conformal interval around each prediction."""
    q = conformal_halfwidth(scores, nominal)
    p = np.asarray(pred, dtype=np.float64)
    return p - q, p + q


def coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of the true values inside their [lower, upper] interval (ends included)."""
    y = np.asarray(y_true, dtype=np.float64)
    if y.size == 0:
        raise MoleculeError("interval coverage: no values")
    return float(np.mean((y >= lower) & (y <= upper)))


def calibration_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Random boolean mask (n,) of round(fraction * n) calibration pairs (at least 1, leaving 1 for training)."""
    if not 0.0 < fraction < 1.0:
        raise MoleculeError(f"calibration fraction: expected a number in (0, 1), found {fraction!r}")
    if n < 2:
        raise MoleculeError(f"conformal calibration needs at least 2 pairs, found {n}")
    k = min(n - 1, max(1, int(round(fraction * n))))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask
