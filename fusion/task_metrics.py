"""Per-fold experiment metrics for each task kind (numpy in, dict of floats out).

Survival: Harrell's c-index as MCAT computes it (scikit-survival's ``concordance_index_censored``
on the risk, event = 1 - censorship, ``tied_tol`` 1e-8) and the mean cumulative/dynamic AUC at the
quartiles of the validation event times (scikit-survival, censoring weights from the training fold).
Classification: macro one-vs-rest AUC over the classes present in the fold (a class absent from a
validation fold is left out of that fold's mean, never a NaN) and balanced accuracy.
Regression: R^2 and Spearman's rho.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

from fusion.errors import FusionDataError

PRIMARY_METRIC = {"survival": "c_index", "classification": "auc", "regression": "r2"}


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray,
                     train_time: np.ndarray | None = None, train_event: np.ndarray | None = None) -> dict[str, float]:
    """``c_index`` (and ``td_auc`` when the training survival data is given) of ``risk`` (higher = worse)."""
    from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not np.isfinite(r).all():
        raise FusionDataError("survival_metrics: risk holds NaN/inf")
    out = {"c_index": float(concordance_index_censored(e, t, r, tied_tol=1e-8)[0])}
    if train_time is not None and train_event is not None:
        out["td_auc"] = _td_auc(t, e, r, np.asarray(train_time, float), np.asarray(train_event).astype(bool),
                                cumulative_dynamic_auc)
    return out


def _td_auc(t, e, r, tt, te, fn) -> float:
    """Mean cumulative/dynamic AUC at the validation event-time quartiles inside the follow-up range."""
    dtype = [("event", bool), ("time", float)]
    y_tr = np.array(list(zip(te, tt)), dtype=dtype)
    y_te = np.array(list(zip(e, t)), dtype=dtype)
    lo, hi = t[e].min() if e.any() else 0.0, min(t.max(), tt.max())
    times = np.quantile(t[e], [0.25, 0.5, 0.75]) if e.sum() >= 4 else np.array([])
    times = np.unique(times[(times >= lo) & (times < hi)])
    if times.size == 0:
        return float("nan")
    try:
        return float(fn(y_tr, y_te, r, times)[1])
    except ValueError:
        return float("nan")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """``auc`` (binary, or macro one-vs-rest over the classes present in ``y_true``) and ``balanced_accuracy``.

    ``proba`` [n, n_classes] class probabilities (binary may be [n] = P(class 1)).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    present = np.unique(y)
    if present.size < 2:
        raise FusionDataError(f"classification_metrics: the fold holds a single class {present.tolist()}")
    if n_classes == 2:
        auc = float(roc_auc_score(y, p[:, 1]))
    else:
        auc = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    bacc = float(balanced_accuracy_score(y, p.argmax(axis=1)))
    return {"auc": auc, "balanced_accuracy": bacc}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``r2`` and ``spearman`` of predictions against targets [n]."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if np.ptp(y) == 0:
        raise FusionDataError("regression_metrics: the fold's targets are constant")
    rho = spearmanr(y, p).statistic if np.ptp(p) > 0 else 0.0
    return {"r2": float(r2_score(y, p)), "spearman": float(rho)}
