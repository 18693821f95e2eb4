"""Classical baselines on the same folds: penalised Cox (CoxNet), logistic and ridge regression.

Each is tuned by an inner cross-validation on the outer training fold only (nested CV), with its
preprocessing (imputation, variance filter, z-scoring) refitted inside every inner fold.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold

from fusion.metrics import c_index
from fusion.preprocess import FoldPreprocessor


def _surv_y(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return np.array(list(zip(np.asarray(event, bool), np.asarray(time, float))), dtype=[("event", bool), ("time", float)])


def coxnet_fit_predict(x_tr: np.ndarray, time_tr: np.ndarray, event_tr: np.ndarray, x_te: np.ndarray, *,
                       l1_ratio: float = 0.5, n_alphas: int = 20, alpha_min_ratio: float = 0.02,
                       inner_folds: int = 5, max_features: int | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """CoxnetSurvivalAnalysis (elastic net Cox) with alpha chosen by inner-CV c-index; risk of ``x_te`` [n].

    Returns (risk, info) with info = {'alpha', 'n_nonzero', 'inner_c_index'}.
    """
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    def fit(xa, ta, ea, alphas=None):
        pre = FoldPreprocessor(max_features=max_features, n_components=None).fit(xa)
        model = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio,
                                       alphas=alphas, max_iter=100000, fit_baseline_model=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(pre.transform(xa).astype(np.float64), _surv_y(ta, ea))
        return pre, model

    pre, full = fit(x_tr, time_tr, event_tr)
    alphas = full.alphas_
    scores = np.zeros((inner_folds, alphas.size))
    inner = StratifiedKFold(inner_folds, shuffle=True, random_state=seed)
    for k, (a, b) in enumerate(inner.split(x_tr, event_tr)):
        p_in, m_in = fit(x_tr[a], time_tr[a], event_tr[a], alphas=alphas)
        xb = p_in.transform(x_tr[b]).astype(np.float64)
        for j, al in enumerate(m_in.alphas_):
            r = m_in.predict(xb, alpha=al)
            scores[k, j] = c_index(time_tr[b], event_tr[b], r) if event_tr[b].any() else 0.5
    mean = scores.mean(axis=0)
    j = int(np.argmax(mean))
    risk = full.predict(pre.transform(x_te).astype(np.float64), alpha=alphas[j])
    coef = full.coef_[:, j]
    return risk, {"alpha": float(alphas[j]), "n_nonzero": int((coef != 0).sum()), "inner_c_index": float(mean[j])}


def logistic_fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, n_classes: int, *,
                         cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0), inner_folds: int = 3,
                         seed: int = 0) -> tuple[np.ndarray, dict]:
    """L2 logistic regression with C chosen by inner-CV log-loss; class probabilities [n, n_classes]."""
    def fit(xa, ya, c):
        pre = FoldPreprocessor(max_features=None, n_components=None).fit(xa)
        return pre, LogisticRegression(C=c, max_iter=2000).fit(pre.transform(xa), ya)

    def proba(pre, m, x):
        out = np.zeros((x.shape[0], n_classes))
        out[:, m.classes_] = m.predict_proba(pre.transform(x))
        return out

    n_inner = max(2, min(inner_folds, int(np.bincount(y_tr).min(initial=inner_folds))))
    loss = np.zeros(len(cs))
    for a, b in StratifiedKFold(n_inner, shuffle=True, random_state=seed).split(x_tr, y_tr):
        for j, c in enumerate(cs):
            p = proba(*fit(x_tr[a], y_tr[a], c), x_tr[b])
            loss[j] -= np.log(np.clip(p[np.arange(len(b)), y_tr[b]], 1e-9, 1)).mean()
    c = cs[int(np.argmin(loss))]
    return proba(*fit(x_tr, y_tr, c), x_te), {"C": float(c)}


def ridge_fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, *,
                      alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0), inner_folds: int = 5,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """Ridge regression with alpha chosen by inner-CV squared error; predictions [n]."""
    def fit(xa, ya, al):
        pre = FoldPreprocessor(max_features=None, n_components=None).fit(xa)
        return pre, Ridge(alpha=al).fit(pre.transform(xa), ya)

    err = np.zeros(len(alphas))
    for a, b in KFold(inner_folds, shuffle=True, random_state=seed).split(x_tr):
        for j, al in enumerate(alphas):
            pre, m = fit(x_tr[a], y_tr[a], al)
            err[j] += ((m.predict(pre.transform(x_tr[b])) - y_tr[b]) ** 2).mean()
    al = alphas[int(np.argmin(err))]
    pre, m = fit(x_tr, y_tr, al)
    return m.predict(pre.transform(x_te)), {"alpha": float(al)}
