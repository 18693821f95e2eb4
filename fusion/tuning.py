"""Per-strategy run options, and the ones a strategy leaves open chosen by inner CV on the outer training fold.

A strategy class may declare ``option_overrides`` ({ExperimentOptions field: value}, always applied to its
fits), ``option_grid`` ({field: candidate values}; every combination is a candidate) and ``tune_grid`` (the
same, searched only when the experiment sets ``ExperimentOptions.tune``: the neural strategies' width and weight
decay, fusion.strategy_base.NEURAL_TUNE_GRID; a field in both grids takes tune_grid's values). In each outer fold
the candidate with the best mean primary metric over inner folds of the fold's TRAINING patients
(fusion.selection.inner_splits, the same folds for every candidate) is refitted on the whole training part;
ties go to the earlier candidate of the grid (list smaller capacities / stronger regularisation first where
that is the safer default). The outer validation patients are never seen. Strategies without a grid
(early, late, ... without ``tune``) are fitted once with the experiment's options, exactly as before.

A strategy's one-modality fit (``+select`` choosing a single modality: the 'single' strategy) takes its
parent strategy's overrides and grid (``grid_of``), as its inner-CV selection scored it.

Cost: len(grid) x inner_folds extra fits per outer fold; in the nested ``best`` row, each tuned candidate's
inner fits are tuned again inside (len(grid) x inner_folds + 1 fits per inner fold).
"""

from __future__ import annotations

import itertools
from dataclasses import fields, replace
from typing import Sequence

import numpy as np

from fusion.errors import FusionConfigError
from fusion.experiment_data import ExperimentData, ExperimentOptions
from fusion.strategies import get_strategy


def _checked(strategy: str, attr: str) -> dict:
    values = dict(getattr(get_strategy(strategy), attr, None) or {})
    known = {f.name for f in fields(ExperimentOptions)}
    bad = sorted(set(values) - known)
    if bad:
        raise FusionConfigError(f"strategy '{strategy}': {attr} key {bad[0]!r} is not an ExperimentOptions field")
    return values


def strategy_options(opts: ExperimentOptions, strategy: str) -> ExperimentOptions:
    """``opts`` with the strategy's ``option_overrides`` applied (``opts`` itself when it declares none)."""
    over = _checked(strategy, "option_overrides")
    return replace(opts, **over) if over else opts


def option_candidates(strategy: str, tune: bool = False) -> list[dict]:
    """Every combination of the strategy's ``option_grid`` (and, with ``tune``, its ``tune_grid``) ({field: value}
    each, grid order, option_grid's fields first); [{}] without a grid."""
    grid = _checked(strategy, "option_grid")
    if tune:
        grid.update(_checked(strategy, "tune_grid"))
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]


def tuned_options(data: ExperimentData, train: Sequence[str], opts: ExperimentOptions, strategy: str,
                  modalities: Sequence[str], head: str | None, seed: int,
                  grid_of: str | None = None) -> tuple[ExperimentOptions, dict]:
    """The options to fit ``strategy`` on ``train`` with: the overrides of ``grid_of`` (default: ``strategy``
    itself; a '+select' run passes its fusion strategy when the chosen subset is one modality, fitted as
    'single'), plus the candidate of its grids (``option_candidates(grid_of, opts.tune)``) with the best
    inner-CV primary metric on ``train`` (only those patients are used).

    Returns (options, info) with info = {'options': the chosen grid values, 'inner': {candidate: inner mean}}
    ({} without a grid). A candidate no inner fold could score gets -inf (reported as None).
    """
    from fusion.folds import fit_predict_fold
    from fusion.selection import inner_cv_mean, inner_splits

    owner = grid_of or strategy
    base = strategy_options(opts, owner)
    cands = option_candidates(owner, opts.tune)
    if cands == [{}]:
        return base, {}
    folds = inner_splits(data, train, opts.inner_folds, seed)
    scores = [inner_cv_mean(data, folds, lambda a, b, s, c=cand: fit_predict_fold(
        data, a, b, replace(base, **c), strategy, modalities, head, s)[0], seed) for cand in cands]
    win = int(np.argmax(scores))  # the first of equal scores
    inner = {_label(c): (round(s, 4) if np.isfinite(s) else None) for c, s in zip(cands, scores)}
    return replace(base, **cands[win]), {"options": cands[win], "inner": inner}


def _label(cand: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cand.items())


def fit_predict_tuned(data: ExperimentData, tr: Sequence[str], va: Sequence[str], opts: ExperimentOptions,
                      strategy: str, modalities: Sequence[str], head: str | None, seed: int,
                      grid_of: str | None = None):
    """fusion.folds.fit_predict_fold with the options of ``grid_of`` (default ``strategy``), chosen on ``tr`` by
    ``tuned_options``.

    Returns (predictions for ``va``, model, fold dataset, positions of ``va`` in it, tuning info).
    """
    from fusion.folds import fit_predict_fold

    run_opts, info = tuned_options(data, tr, opts, strategy, modalities, head, seed, grid_of)
    return (*fit_predict_fold(data, tr, va, run_opts, strategy, modalities, head, seed), info)
