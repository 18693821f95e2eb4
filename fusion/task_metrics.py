"""Per-fold experiment metrics for each task kind (numpy in, dict of floats out).

Survival: Harrell's c-index as MCAT computes it (``fusion.metrics.c_index``: scikit-survival's
``concordance_index_censored`` on the risk, event = 1 - censorship, ``tied_tol`` 1e-8) and the mean
cumulative/dynamic AUC at the quartiles of the validation event times (scikit-survival, censoring weights from the training fold);
given each validation patient's survival function, the integrated Brier score ``ibs`` (lower is better)
and ``ibs_km``, the same score of the training fold's Kaplan-Meier curve (the covariate-free null model),
on the grid of ``fusion.survival_functions.ibs_times`` (NaN for a fold too small to support it).
Classification: ``fusion.metrics.roc_auc`` (macro one-vs-rest AUC over the classes present in the fold: a
class absent from a validation fold is left out of that fold's mean, never a NaN) and balanced accuracy.
Regression: R^2 and Spearman's rho.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import r2_score

from fusion.errors import FusionDataError
from fusion.metrics import balanced_accuracy, c_index, roc_auc
from fusion.survival_functions import SurvivalFn, ibs_times, integrated_brier, km_survival, surv_arrays

PRIMARY_METRIC = {"survival": "c_index", "classification": "auc", "regression": "r2"}


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray,
                     train_time: np.ndarray | None = None, train_event: np.ndarray | None = None,
                     survival_fn: SurvivalFn | None = None) -> dict[str, float]:
    """``c_index`` of ``risk`` (higher = worse); with the training survival data also ``td_auc``, and with
    ``survival_fn`` (times [T] -> S(t) [n, T] of the validation patients) also ``ibs`` and ``ibs_km``."""
    from sksurv.metrics import cumulative_dynamic_auc

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not np.isfinite(r).all():
        raise FusionDataError("survival_metrics: risk holds NaN/inf")
    out = {"c_index": c_index(t, e, r)}
    if train_time is not None and train_event is not None:
        out["td_auc"] = _td_auc(t, e, r, np.asarray(train_time, float), np.asarray(train_event).astype(bool),
                                cumulative_dynamic_auc)
        if survival_fn is not None:
            tt, te = np.asarray(train_time, float), np.asarray(train_event).astype(bool)
            grid = ibs_times(t, e, tt)
            km = np.broadcast_to(km_survival(tt, te, grid), (t.size, grid.size))
            out["ibs"] = integrated_brier(t, e, tt, te, survival_fn(grid), grid) if grid.size else float("nan")
            out["ibs_km"] = integrated_brier(t, e, tt, te, km, grid)
    return out


def _td_auc(t, e, r, tt, te, fn) -> float:
    """Mean cumulative/dynamic AUC at the validation event-time quartiles inside the follow-up range."""
    y_tr, y_te = surv_arrays(t, e, tt, te)  # validation times past the last training time clipped to it
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
    auc = roc_auc(y, p[:, 1] if n_classes == 2 else p)
    bacc = balanced_accuracy(y, p.argmax(axis=1))
    return {"auc": auc, "balanced_accuracy": bacc}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``r2`` and ``spearman`` of predictions against targets [n]."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if np.ptp(y) == 0:
        raise FusionDataError("regression_metrics: the fold's targets are constant")
    rho = spearmanr(y, p).statistic if np.ptp(p) > 0 else 0.0
    return {"r2": float(r2_score(y, p)), "spearman": float(rho)}
