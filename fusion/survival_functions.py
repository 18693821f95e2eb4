"""Per-patient survival functions S(t | x) of the survival models, for the integrated Brier score.

Cox models (the neural Cox head, CoxNet): Breslow estimator of the baseline cumulative hazard from
the TRAINING fold's linear predictors eta, times and events,
    H0(t) = sum over event times u <= t of d(u) / sum_{j: t_j >= u} exp(eta_j),
and S(t | x) = exp(-H0(t) exp(eta(x))). Ties count every event at u in d(u) (Breslow), as
scikit-survival's ``BreslowEstimator`` and lifelines' ``CoxPHFitter`` do.

Discrete-time NLL head (MCAT): bins (-inf, e_0], (e_0, e_1], ..., (e_{K-2}, inf) on the training
fold's inner edges e; S(t) = prod over the bins COMPLETED by t (e_k <= t) of (1 - h_k): exactly
P(T > e_k) at every edge, held constant inside a bin (a step function; the open last bin never ends).

Evaluation times (``ibs_times``): ``n`` points evenly spaced between the 10th and 80th percentiles of
the VALIDATION event times, kept inside [min validation time, min(max validation time, max training
time)) so that scikit-survival's requirements hold and the training-fold censoring distribution
G(t) > 0 at every point; an empty grid (fewer than ``min_events`` validation events, or fewer than 2
usable points) means the fold cannot support an IBS and the metric is NaN for that fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SurvivalFn = Callable[[np.ndarray], np.ndarray]  # times [T] -> S(t | patient) [n, T]


@dataclass(frozen=True)
class BreslowBaseline:
    """Baseline cumulative hazard of a Cox model: H0 at each unique training event time, relative to ``shift``.

    ``hazard`` holds H0(t) * exp(shift) (``shift`` = max training eta, which keeps exp() finite).
    """

    event_times: np.ndarray
    hazard: np.ndarray
    shift: float

    @classmethod
    def fit(cls, eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> "BreslowBaseline":
        """Breslow estimate from training linear predictors ``eta`` [n], times [n] and events (bool) [n]."""
        eta = np.asarray(eta, dtype=np.float64).reshape(-1)
        t = np.asarray(time, dtype=np.float64).reshape(-1)
        e = np.asarray(event).astype(bool).reshape(-1)
        shift = float(eta.max()) if eta.size else 0.0
        order = np.argsort(t, kind="stable")
        t_sorted = t[order]
        at_risk = np.cumsum(np.exp(eta[order] - shift)[::-1])[::-1]  # sum over t_j >= t_sorted[i]
        u, d = np.unique(t[e], return_counts=True)
        denom = at_risk[np.searchsorted(t_sorted, u, side="left")]
        return cls(u, np.cumsum(d / denom), shift)

    def _shifted(self, times: np.ndarray) -> np.ndarray:
        """H0(t) * exp(shift) [T]: the step function's value at each time (0 before the first event)."""
        return _step(self.event_times, self.hazard, times, before=0.0)

    def cumulative_hazard(self, times: np.ndarray) -> np.ndarray:
        """H0(t) [T] (in the model's own eta scale, i.e. without ``shift``)."""
        return self._shifted(times) * np.exp(-self.shift)

    def survival(self, eta: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | eta) = exp(-H0(t) exp(eta)) [n, T] for linear predictors ``eta`` [n]."""
        h = self._shifted(times)
        with np.errstate(divide="ignore", over="ignore"):
            log_h = np.log(h)  # -inf before the first event: S = 1
            eta = np.asarray(eta, dtype=np.float64).reshape(-1, 1) - self.shift
            return np.exp(-np.exp(log_h[None, :] + eta))


def cox_survival_fn(train_eta: np.ndarray, train_time: np.ndarray, train_event: np.ndarray,
                    eta: np.ndarray) -> SurvivalFn:
    """times -> S(t | x) [n, T] of the patients with linear predictors ``eta`` (Breslow on the training fold)."""
    base = BreslowBaseline.fit(train_eta, train_time, train_event)
    eta = np.asarray(eta, dtype=np.float64).reshape(-1)
    return lambda times: base.survival(eta, times)


def nll_survival(hazards: np.ndarray, edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S(t) [n, T] of the discrete-time head: product of (1 - h_k) over the bins with edge e_k <= t.

    ``hazards`` [n, K] per-bin hazards (sigmoid of the logits), ``edges`` [K - 1] inner bin edges.
    """
    h = np.asarray(hazards, dtype=np.float64)
    s = np.concatenate([np.ones((h.shape[0], 1)), np.cumprod(1.0 - h, axis=1)], axis=1)  # S_{-1} = 1, S_0..S_{K-1}
    done = np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(times, dtype=np.float64), side="right")
    return s[:, np.minimum(done, h.shape[1] - 1)]


def nll_survival_fn(hazards: np.ndarray, edges: np.ndarray) -> SurvivalFn:
    """times -> S(t) [n, T] of the discrete-time head (see ``nll_survival``)."""
    h, e = np.asarray(hazards, dtype=np.float64), np.asarray(edges, dtype=np.float64)
    return lambda times: nll_survival(h, e, times)


def km_survival(train_time: np.ndarray, train_event: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Kaplan-Meier S(t) [T] of the training fold (the marginal, covariate-free reference model)."""
    t = np.asarray(train_time, dtype=np.float64)
    e = np.asarray(train_event).astype(bool)
    u, d = np.unique(t[e], return_counts=True)
    n_risk = t.size - np.searchsorted(np.sort(t), u, side="left")
    return _step(u, np.cumprod(1.0 - d / n_risk), times, before=1.0)


def _step(x: np.ndarray, y: np.ndarray, times: np.ndarray, before: float) -> np.ndarray:
    """Right-continuous step function through (x, y) at ``times`` [T]; ``before`` left of x[0]."""
    k = np.searchsorted(x, np.asarray(times, dtype=np.float64), side="right") - 1
    if not y.size:
        return np.full(k.shape, before)
    return np.where(k >= 0, y[np.clip(k, 0, None)], before)


def ibs_times(time: np.ndarray, event: np.ndarray, train_time: np.ndarray, n: int = 15,
              quantiles: tuple[float, float] = (0.1, 0.8), min_events: int = 5) -> np.ndarray:
    """Evaluation grid [<= n] for the IBS of one validation fold (see the module docstring); empty if unsupported."""
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    if e.sum() < min_events:
        return np.array([])
    lo, hi = np.quantile(t[e], quantiles)
    grid = np.unique(np.linspace(lo, hi, n))
    upper = min(t.max(), float(np.max(train_time)))
    grid = grid[(grid >= t.min()) & (grid < upper)]
    return grid if grid.size >= 2 else np.array([])


def surv_arrays(time: np.ndarray, event: np.ndarray, train_time: np.ndarray,
                train_event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-survival (event, time) records of the training and validation patients.

    A validation patient followed up to or past the last training time is recorded as censored at
    that time: at every evaluation time (all below the last training time) such a patient is a control
    either way, so Brier scores and cumulative/dynamic AUCs are unchanged, and the training-fold
    censoring Kaplan-Meier, undefined (or zero) from its last time on, is never needed there
    (scikit-survival would raise instead).
    """
    tt = np.asarray(train_time, dtype=np.float64)
    t = np.asarray(time, dtype=np.float64)
    late = t >= tt.max()
    dtype = [("event", bool), ("time", float)]
    y_tr = np.array(list(zip(np.asarray(train_event).astype(bool), tt)), dtype=dtype)
    y_te = np.array(list(zip(np.asarray(event).astype(bool) & ~late, np.where(late, tt.max(), t))), dtype=dtype)
    return y_tr, y_te


def integrated_brier(time: np.ndarray, event: np.ndarray, train_time: np.ndarray, train_event: np.ndarray,
                     surv: np.ndarray, times: np.ndarray) -> float:
    """scikit-survival's integrated Brier score of ``surv`` [n, T] at ``times`` (censoring weights from training).

    Validation times beyond the last training time are clipped to it (``surv_arrays``). NaN if ``times``
    has fewer than 2 points, ``surv`` is not finite or scikit-survival rejects the fold.
    """
    from sksurv.metrics import integrated_brier_score

    times = np.asarray(times, dtype=np.float64)
    if times.size < 2:
        return float("nan")
    y_tr, y_te = surv_arrays(time, event, train_time, train_event)
    surv = np.asarray(surv, dtype=np.float64)
    if not np.isfinite(surv).all():
        return float("nan")
    try:
        return float(integrated_brier_score(y_tr, y_te, surv, times))
    except ValueError:
        return float("nan")
