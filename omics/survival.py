"""Survival association: vectorised univariate Cox PH (Breslow ties) across genes.

The log-rank test is lifelines' (``lifelines.statistics.logrank_test``), as the experiment report uses it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fusion.errors import OmicsFormatError
from omics.de import benjamini_hochberg


def _check_survival(time: np.ndarray, event: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=np.float64).ravel()
    event = np.asarray(event).ravel()
    if time.shape[0] != n or event.shape[0] != n:
        raise OmicsFormatError(f"survival: time ({time.shape[0]}) and event ({event.shape[0]}) must have {n} samples")
    if not np.isfinite(time).all():
        raise OmicsFormatError("survival: time must be finite for every sample")
    if not np.isin(event, (0, 1)).all():
        raise OmicsFormatError("survival: event must be 0 (censored) or 1 (event) for every sample")
    return time, event.astype(bool)


def _risk_sets(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, index (in sorted order) where each distinct event time's risk set starts, and its event count."""
    order = np.argsort(time, kind="stable")
    t_sorted, e_sorted = time[order], event[order]
    distinct, first, inverse = np.unique(t_sorted, return_index=True, return_inverse=True)
    deaths = np.bincount(inverse, weights=e_sorted.astype(np.float64), minlength=distinct.shape[0])
    has_event = deaths > 0
    return order, first[has_event], deaths[has_event]


def _cox_terms(
    beta: np.ndarray, x: np.ndarray, start: np.ndarray, deaths: np.ndarray, sum_x_events: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Breslow partial log-likelihood, score and information for one coefficient per gene (x sorted by time)."""
    eta = x * beta
    shift = eta.max(axis=0)
    w = np.exp(eta - shift)

    def tail(a: np.ndarray) -> np.ndarray:  # sum over the risk set (all samples with time >= t)
        return np.cumsum(a[::-1], axis=0)[::-1][start]

    s0, s1, s2 = tail(w), tail(w * x), tail(w * x * x)
    mean = s1 / s0
    d = deaths[:, None]
    loglik = beta * sum_x_events - (d * (np.log(s0) + shift)).sum(axis=0)
    score = sum_x_events - (d * mean).sum(axis=0)
    information = (d * (s2 / s0 - mean * mean)).sum(axis=0)
    return loglik, score, information


def _newton_block(
    x: np.ndarray,
    start: np.ndarray,
    deaths: np.ndarray,
    sum_x_events: np.ndarray,
    skip: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton-Raphson with step halving for a block of standardised genes: (beta, information, converged)."""
    g = x.shape[1]
    beta = np.zeros(g)
    loglik, score, info = _cox_terms(beta, x, start, deaths, sum_x_events)
    converged = np.zeros(g, dtype=bool)
    done = skip.copy()
    for _ in range(max_iter):
        # a vanishing information means a monotone likelihood (separation): stop, not converged
        done |= ~(info > 1e-10)
        active = ~done
        if not active.any():
            break
        step = np.where(active, score / np.where(active, info, 1.0), 0.0)
        new_beta = beta + step
        new_loglik, new_score, new_info = _cox_terms(new_beta, x, start, deaths, sum_x_events)
        for _ in range(30):  # step halving where the likelihood went down
            # relative slack: near the optimum rounding noise must not count as a decrease
            worse = active & (new_loglik < loglik - 1e-10 * (1.0 + np.abs(loglik)))
            if not worse.any():
                break
            step = np.where(worse, step / 2.0, step)
            new_beta = np.where(worse, beta + step, new_beta)
            new_loglik, new_score, new_info = _cox_terms(new_beta, x, start, deaths, sum_x_events)
        beta = np.where(active, new_beta, beta)
        loglik = np.where(active, new_loglik, loglik)
        score = np.where(active, new_score, score)
        info = np.where(active, new_info, info)
        newly = active & (np.abs(step) < tol * np.maximum(1.0, np.abs(beta)))
        converged |= newly
        done |= newly
    return beta, info, converged


def cox_univariate(
    values: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    genes: Sequence[str] | None = None,
    *,
    max_iter: int = 50,
    tol: float = 1e-9,
    chunk_genes: int = 2048,
) -> pd.DataFrame:
    """Per-gene univariate Cox PH fits (Newton-Raphson on all genes at once, Breslow ties).

    values: [n_samples, n_genes]; time in any unit (e.g. days); event 1 = death. Returns per gene the
    coefficient per unit of the value, its standard error, hazard ratio, Wald z, two-sided p, BH fdr,
    and whether Newton-Raphson converged (False flags e.g. monotone likelihood / perfect separation).
    Constant genes get NaN.
    """
    x_raw = _expression_matrix(values)
    n, g = x_raw.shape
    time, event = _check_survival(time, event, n)
    if not event.any():
        raise OmicsFormatError("cox_univariate: no events; the Cox model is not identifiable")
    mean, sd = x_raw.mean(axis=0), x_raw.std(axis=0)
    constant = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    sd_safe = np.where(constant, 1.0, sd)
    order, start, deaths = _risk_sets(time, event)
    x = ((x_raw - mean) / sd_safe)[order]  # standardised for a well-conditioned Newton-Raphson
    sum_x_events = x[event[order]].sum(axis=0)

    beta, info, converged = np.zeros(g), np.zeros(g), np.zeros(g, dtype=bool)
    for lo in range(0, g, chunk_genes):  # blocks bound memory at ~[n_samples, chunk_genes] arrays
        block = slice(lo, lo + chunk_genes)
        beta[block], info[block], converged[block] = _newton_block(
            x[:, block], start, deaths, sum_x_events[block], constant[block], max_iter, tol
        )
    return _cox_table(beta, info, converged, sd_safe, constant, genes)


def _expression_matrix(values: np.ndarray) -> np.ndarray:
    """values as a finite float64 [n_samples, n_genes] array (a 1-D array is one gene)."""
    x_raw = np.asarray(values, dtype=np.float64)
    if x_raw.ndim == 1:
        x_raw = x_raw[:, None]
    if x_raw.ndim != 2 or not np.isfinite(x_raw).all():
        raise OmicsFormatError("cox_univariate: values must be a finite [n_samples, n_genes] array")
    return x_raw


def _cox_table(
    beta: np.ndarray,
    info: np.ndarray,
    converged: np.ndarray,
    sd: np.ndarray,
    constant: np.ndarray,
    genes: Sequence[str] | None,
) -> pd.DataFrame:
    """Per-gene table from standardised fits: coef and se back per unit of the raw value, HR, Wald z, p, fdr."""
    g = beta.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        se_std = 1.0 / np.sqrt(info)
        z = beta / se_std
    coef = beta / sd
    se = se_std / sd
    p = 2.0 * stats.norm.sf(np.abs(z))
    coef[constant], se[constant], z[constant], p[constant] = np.nan, np.nan, np.nan, np.nan
    index = pd.Index(list(genes) if genes is not None else np.arange(g), name="gene")
    if len(index) != g:
        raise OmicsFormatError(f"cox_univariate: {len(index)} gene names for {g} columns")
    return pd.DataFrame(
        {
            "coef": coef,
            "se": se,
            "hazard_ratio": np.exp(coef),
            "z": z,
            "p_value": p,
            "fdr": benjamini_hochberg(p),
            "converged": converged & ~constant,
        },
        index=index,
    )
