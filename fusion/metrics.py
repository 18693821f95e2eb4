"""The one home of the scalar evaluation metrics every caller shares (numpy in, float out).

- ``roc_auc``: ROC AUC as the Mann-Whitney statistic on average ranks (equal to scikit-learn's
  ``roc_auc_score``, ties counting 0.5, at a hundredth of its input-checking cost: the experiment engine scores
  thousands of small folds); binary, or macro one-vs-rest over the classes present in ``y_true``; NaN when
  ``y_true`` holds a single class.
- ``balanced_accuracy``: the mean recall over the classes present in ``y_true`` (scikit-learn's definition).
- ``c_index``: Harrell's concordance index through scikit-survival's ``concordance_index_censored``
  (``tied_tol`` 1e-8), as MCAT computes it. The DeepDTA affinity CI is the same statistic with every
  "event" observed (``molecules.dti_metrics``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from fusion.errors import FusionDataError

TIED_TOL = 1e-8  # risks closer than this count as tied (scikit-survival's default)


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (tied scores count 0.5).

    Args:
        y_true: [N] binary labels (0/1 or bool), or class ids 0..C-1 when ``score`` is [N, C].
        score: [N] (or [N, 1]) scores of class 1, or [N, C] class probabilities.

    Returns the binary AUC, or for [N, C] the mean over the classes present in ``y_true`` of the one-vs-rest
    AUC of that class's column (a class absent from ``y_true`` is left out, never a NaN); NaN when
    ``y_true`` holds a single class. Raises FusionDataError when the lengths differ.
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=np.float64)
    if s.shape[0] != y.shape[0]:
        raise FusionDataError(f"roc_auc: {y.shape[0]} labels but {s.shape[0]} scores")
    present = np.unique(y)
    if present.size < 2:
        return float("nan")
    if s.ndim == 2 and s.shape[1] > 1:
        if s.shape[1] == 2:
            return _binary_auc(y.astype(int) == 1, s[:, 1])
        return float(np.mean([_binary_auc(y == c, s[:, int(c)]) for c in present]))
    return _binary_auc(y == present[-1], s.reshape(-1))


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie): the rank-sum (Mann-Whitney U) form."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(score)  # average ranks: a tie between a positive and a negative counts 0.5
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of the fraction of that class predicted as it (recall)."""
    y, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index of ``risk`` (higher = earlier event) with survival ``time`` and ``event``.

    A pair (i, j) is comparable when time_i < time_j and i had the event (or the times tie and only i had
    it); it is concordant when risk_i > risk_j and counts 0.5 when the risks tie (within 1e-8).
    Raises FusionDataError on unequal lengths, NaN/inf risk or no comparable pair.
    """
    from sksurv.metrics import concordance_index_censored

    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event).astype(bool).reshape(-1)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (t.shape == e.shape == r.shape):
        raise FusionDataError(f"c_index: time, event, risk must have the same length, got {t.size}, {e.size}, {r.size}")
    if not np.isfinite(r).all():
        raise FusionDataError("c_index: risk holds NaN/inf")
    try:
        return float(concordance_index_censored(e, t, r, tied_tol=TIED_TOL)[0])
    except ValueError as exc:  # all censored, or no comparable pair
        raise FusionDataError(f"c_index: no comparable pair (needs an event before another patient's time): "
                              f"{exc}") from exc
