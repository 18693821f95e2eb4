"""Evaluation metrics: ROC AUC, Harrell's c-index, R^2 and RMSE (numpy in, float out)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fusion.errors import FusionDataError


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: binary labels [N] vs scores [N], or class ids [N] vs class
    probabilities [N, C] (macro one-vs-rest). Tied scores count 0.5."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=np.float64)
    if s.shape[0] != y.shape[0]:
        raise FusionDataError(f"roc_auc: {y.shape[0]} labels but {s.shape[0]} scores")
    if np.unique(y).size < 2:
        raise FusionDataError("roc_auc: y_true holds a single class; AUC is undefined")
    if s.ndim == 2 and s.shape[1] > 1:
        if s.shape[1] == 2:
            return float(roc_auc_score(y, s[:, 1]))
        return float(roc_auc_score(y, s, multi_class="ovr", average="macro", labels=np.arange(s.shape[1])))
    return float(roc_auc_score(y, s.reshape(-1)))


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray, chunk: int = 2048) -> float:
    """Harrell's concordance index of ``risk`` (higher = earlier event) with survival ``time`` and ``event``.

    A pair (i, j) is comparable when time_i < time_j and i had the event; it is concordant
    when risk_i > risk_j and counts 0.5 when the risks tie. Vectorised in row chunks.
    """
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event).astype(bool).reshape(-1)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (t.shape == e.shape == r.shape):
        raise FusionDataError(f"c_index: time, event, risk must have the same length, got {t.size}, {e.size}, {r.size}")
    if not np.isfinite(r).all():
        raise FusionDataError("c_index: risk holds NaN/inf")
    rows = np.flatnonzero(e)
    concordant = 0.0
    comparable = 0
    for start in range(0, rows.size, chunk):
        i = rows[start : start + chunk]
        comp = t[i][:, None] < t[None, :]
        diff = r[i][:, None] - r[None, :]
        concordant += float(((diff > 0) & comp).sum()) + 0.5 * float(((diff == 0) & comp).sum())
        comparable += int(comp.sum())
    if comparable == 0:
        raise FusionDataError("c_index: no comparable pair (needs an event before another patient's time)")
    return concordant / comparable


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (averaged over columns for [N, k])."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64).reshape(y.shape)
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if np.any(ss_tot == 0):
        raise FusionDataError("r2: y_true is constant; R^2 is undefined")
    return float(np.mean(1.0 - ss_res / ss_tot))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error, in the units of y."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64).reshape(y.shape)
    return float(np.sqrt(np.mean((y - p) ** 2)))
