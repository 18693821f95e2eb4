"""Probability calibration of classifiers: temperature scaling (Guo et al. 2017), top-label expected
calibration error and reliability bins.

Everything works on class log-probabilities ``logp`` [n, K] (a binary model's P(y=1) p becomes
[log(1 - p), log p]): temperature T rescales them as softmax(logp / T), which for two classes is
sigmoid(logit(p) / T). T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones.
The temperature is fitted on held-out predictions (the experiment's out-of-fold predictions), never on
the predictions a model makes for its own training patients.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from fusion.errors import FusionDataError

LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # temperatures searched (wider would only fit label noise)
PROB_FLOOR = 1e-7  # probabilities are floored before the log, so that a saturated 0 or 1 stays finite


def _checked(logp: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    lp = np.asarray(logp, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise FusionDataError(f"{what}: expected log-probabilities [n, K >= 2], found shape {lp.shape}")
    if lp.shape[0] != y.size or y.size == 0:
        raise FusionDataError(f"{what}: {lp.shape[0]} prediction rows but {y.size} labels (need the same, > 0)")
    if np.isnan(lp).any():
        raise FusionDataError(f"{what}: log-probabilities hold NaN")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= lp.shape[1]:
        raise FusionDataError(f"{what}: labels must lie in [0, {lp.shape[1]}), found range [{y.min()}, {y.max()}]")
    return lp, y


def scaled_log_probs(logp: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(logp / T) [n, K]."""
    if not temperature > 0:
        raise FusionDataError(f"temperature must be > 0, found {temperature}")
    return log_softmax(np.asarray(logp, dtype=np.float64) / float(temperature), axis=1)


def nll(logp: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logp / T)."""
    lp, y = _checked(logp, labels, "nll")
    return float(-scaled_log_probs(lp, temperature)[np.arange(y.size), y].mean())


def fit_temperature(logp: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logp / T) on (``logp`` [n, K], ``labels`` [n] class ids).

    Searched on log T within [0.05, 20] (bounded Brent); returns 1.0 when the labels hold a single class
    (nothing to calibrate against). Raises FusionDataError on mismatched shapes, NaN or out-of-range labels.
    """
    lp, y = _checked(logp, labels, "fit_temperature")
    if np.unique(y).size < 2:
        return 1.0
    lp = np.maximum(lp, np.log(PROB_FLOOR))  # one -inf would make every T > 0 infinitely bad
    rows = np.arange(y.size)

    def loss(log_t: float) -> float:
        return float(-log_softmax(lp / np.exp(log_t), axis=1)[rows, y].mean())

    res = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _bin_of(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bin b holds (b / n_bins, (b + 1) / n_bins], bin 0 also holds 0."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability table: one row per equal-width confidence bin (all ``n_bins`` of them).

    Columns: ``bin``, ``lower``, ``upper`` (the bin holds confidences in (lower, upper]), ``confidence``
    (mean top-class probability), ``accuracy`` (fraction whose top class is the label), ``count``
    (NaN confidence/accuracy where count is 0). ``probs`` [n, K] class probabilities, ``labels`` [n].
    """
    if n_bins < 1:
        raise FusionDataError(f"reliability_bins: n_bins must be >= 1, found {n_bins}")
    p, y = _checked(probs, labels, "reliability_bins")
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    b = _bin_of(conf, n_bins)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=hit, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:],
                         "confidence": np.where(count > 0, mean_conf, np.nan),
                         "accuracy": np.where(count > 0, acc, np.nan), "count": count})


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over equal-width confidence bins of (bin count / n) * |accuracy - confidence|."""
    t = reliability_bins(probs, labels, n_bins)
    t = t[t["count"] > 0]
    return float((t["count"] / t["count"].sum() * (t["accuracy"] - t["confidence"]).abs()).sum())


def log_probs_from_predictions(pred: np.ndarray) -> np.ndarray:
    """Class log-probabilities [n, K] from a classifier's predictions: P(y=1) [n] (binary) or probabilities
    [n, K], floored at 1e-7 and renormalised so that rows stay distributions."""
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise FusionDataError(f"log_probs_from_predictions: expected finite P(y=1) [n] or probabilities [n, K], "
                              f"found shape {p.shape}")
    p = np.clip(p, PROB_FLOOR, 1.0)
    return np.log(p / p.sum(axis=1, keepdims=True))


def oof_log_probs(oof: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(patients, fold ids [n], log-probabilities [n, K]) of an experiment row's out-of-fold predictions
    (``ModelResult.oof``: columns patient, fold and ``prediction`` (binary P(y=1)) or ``p_0`` .. ``p_{K-1}``)."""
    cols = [c for c in oof.columns if str(c).startswith("p_")]
    if not cols and "prediction" not in oof.columns:
        raise FusionDataError(f"out-of-fold predictions: need a 'prediction' or 'p_<k>' column, "
                              f"found {list(oof.columns)}")
    pred = oof[sorted(cols, key=lambda c: int(str(c)[2:]))].to_numpy() if cols else oof["prediction"].to_numpy()
    return [str(p) for p in oof["patient"]], oof["fold"].to_numpy(np.int64), log_probs_from_predictions(pred)


def crossfit_temperature(logp: np.ndarray, labels: np.ndarray, folds: Sequence[int]) -> tuple[np.ndarray, list[float]]:
    """Honest temperature-scaled log-probabilities: the rows of each fold scaled with the temperature fitted
    on the OTHER folds' rows (so the ECE "after" is measured on rows the temperature never saw).

    Returns (scaled log-probabilities [n, K], the temperature of each fold in sorted fold order).
    """
    lp, y = _checked(logp, labels, "crossfit_temperature")
    f = np.asarray(folds).reshape(-1)
    if f.size != y.size:
        raise FusionDataError(f"crossfit_temperature: {f.size} fold ids for {y.size} rows")
    out = np.empty_like(lp)
    temps = []
    for k in np.unique(f):
        t = fit_temperature(lp[f != k], y[f != k]) if (f != k).any() else 1.0
        out[f == k] = scaled_log_probs(lp[f == k], t)
        temps.append(t)
    return out, temps


def calibration_summary(logp: np.ndarray, labels: np.ndarray, folds: Sequence[int] | None = None,
                        n_bins: int = 10) -> dict[str, float]:
    """Temperature fitted on every row, top-label ECE and NLL before and after scaling, and (with ``folds``)
    the cross-fitted ECE after scaling (``ece_after_crossfit``: see ``crossfit_temperature``)."""
    lp, y = _checked(logp, labels, "calibration_summary")
    t = fit_temperature(lp, y)
    after = scaled_log_probs(lp, t)
    out = {"temperature": t, "n": int(y.size), "n_bins": int(n_bins),
           "ece_before": expected_calibration_error(np.exp(scaled_log_probs(lp, 1.0)), y, n_bins),
           "ece_after": expected_calibration_error(np.exp(after), y, n_bins),
           "nll_before": nll(lp, y), "nll_after": nll(lp, y, t)}
    if folds is not None:
        cf, _ = crossfit_temperature(lp, y, folds)
        out["ece_after_crossfit"] = expected_calibration_error(np.exp(cf), y, n_bins)
    return out
