"""Modality selection by inner cross-validation: fusion never clearly below its best member.

Inside one outer training fold, every candidate modality subset (each single modality and the full
set; every non-empty subset when there are at most 3 modalities) is cross-validated on inner folds;
the best inner mean wins (ties go to the larger subset). The outer validation fold is never seen.
``inner_cv_mean`` is the one inner-CV scoring loop: subset selection here, a strategy's option grid
(fusion.tuning) and the nested ``best`` rows (fusion.nested) all score their candidates with it.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from fusion.errors import FusionDataError

if TYPE_CHECKING:
    from fusion.experiment_data import ExperimentData, ExperimentOptions


def candidate_subsets(modalities: Sequence[str]) -> list[list[str]]:
    """All non-empty subsets for <= 3 modalities, else each single modality and the full set."""
    mods = list(modalities)
    if len(mods) <= 3:
        return [list(c) for k in range(1, len(mods) + 1) for c in itertools.combinations(mods, k)]
    return [[m] for m in mods] + [mods]


def inner_splits(data: "ExperimentData", train: Sequence[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Stratified (class / event) K-fold of the outer training patients."""
    from sklearn.model_selection import KFold, StratifiedKFold

    tr = np.asarray(list(train))
    t = data.target.loc[tr]
    strata = t["label"].to_numpy() if data.task == "classification" else (
        t["event"].to_numpy(int) if data.task == "survival" else None)
    if strata is not None and np.bincount(strata).min(initial=k) >= k:
        parts = StratifiedKFold(k, shuffle=True, random_state=seed).split(tr, strata)
    else:
        parts = KFold(k, shuffle=True, random_state=seed).split(tr)
    return [(tr[a].tolist(), tr[b].tolist()) for a, b in parts]


def inner_cv_mean(data: "ExperimentData", folds: Sequence[tuple[list[str], list[str]]],
                  predict: Callable[[list[str], list[str], int], np.ndarray], seed: int) -> float:
    """The mean primary metric of ``predict(a, b, seed + 17 * (j + 1))`` (predictions for ``b``, fitted on ``a``)
    over the inner folds ``folds``; a fold that cannot be fitted or scored (FusionDataError / ValueError: no
    class, comparable pair or modality there) or scores NaN is left out; -inf when none is left."""
    from fusion.folds import score_fold
    from fusion.task_metrics import PRIMARY_METRIC

    metric = PRIMARY_METRIC[data.task]
    vals = []
    for j, (a, b) in enumerate(folds):
        try:
            vals.append(score_fold(data, a, b, predict(a, b, seed + 17 * (j + 1)))[metric])
        except (FusionDataError, ValueError):
            continue
    finite = [v for v in vals if np.isfinite(v)]
    return float(np.mean(finite)) if finite else -np.inf


def select_subset(data: "ExperimentData", train: Sequence[str], opts: "ExperimentOptions", strategy: str,
                  modalities: Sequence[str], head: str | None, seed: int) -> tuple[list[str], dict[str, float]]:
    """The modality subset with the best inner-CV primary metric (``inner_cv_mean``), and every candidate's inner
    mean. Candidates are fitted with ``opts`` as given (the caller applies the strategy's overrides; its option
    grid is searched once, for the chosen subset, by fusion.tuning); a one-modality subset is fitted as 'single'."""
    from fusion.folds import fit_predict_fold

    folds = inner_splits(data, train, opts.inner_folds, seed)
    scores: dict[str, float] = {}
    best, best_score = list(modalities), -np.inf
    for cand in sorted(candidate_subsets(modalities), key=len, reverse=True):
        strat = strategy if len(cand) > 1 else "single"
        mean = inner_cv_mean(data, folds, lambda a, b, s, c=cand, st=strat: fit_predict_fold(
            data, a, b, opts, st, c, head, s)[0], seed)
        scores["+".join(cand)] = mean
        if mean > best_score + 1e-9:
            best, best_score = cand, mean
    return best, scores
