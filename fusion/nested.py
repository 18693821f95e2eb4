"""Do no harm: nested model selection across an experiment's models (the ``best`` and ``best:single`` rows).

In every outer fold, each candidate model (each single modality, each fusion strategy, the experts late
fusion, the classical baseline) is cross-validated on inner folds of the outer TRAINING patients only (the
same inner folds for every candidate); the candidate with the best inner mean of the primary metric wins the
fold, and the ``best`` row's prediction for that outer fold is the winner's own outer-fold prediction (the
winner refitted on the whole outer training part, which its cross-validated row already holds). So the row
scores what a user who asks for "the best model" gets, without flattering it by picking on the outer folds.
``best:single`` does the same among the single-modality models only: the honest "best single modality" that
``best`` is compared with (picking the best single row on the outer folds flatters it).

Cost: candidates x inner folds x outer folds fits (inner scores run on the experiment's process pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from fusion.errors import FusionDataError
from fusion.experiment_data import EXPERTS, ExperimentData, ExperimentOptions, ModelResult, Split

BEST, BEST_SINGLE = "best", "best:single"


@dataclass(frozen=True)
class Candidate:
    """One model the nested selection may pick: its row name, kind (neural | experts | baseline), strategy,
    modalities and survival head, as in its ModelResult."""

    name: str
    kind: str
    strategy: str
    modalities: tuple[str, ...]
    head: str | None

    @property
    def is_single(self) -> bool:
        return self.strategy == "single"


def candidates_of(results: Sequence[ModelResult], names: Sequence[str] | None = None) -> list[Candidate]:
    """The candidates among an experiment's results: every single, fusion (not '+select': those run their own
    inner CV), experts and baseline row, or only the rows named in ``names`` (FusionDataError naming an unknown one)."""
    out = []
    for r in results:
        if r.strategy == "best" or r.name.split("/")[0].endswith("+select"):
            continue
        kind = "baseline" if r.strategy == "baseline" else (EXPERTS if r.strategy == EXPERTS else "neural")
        out.append(Candidate(r.name, kind, r.strategy, tuple(r.modalities), r.head))
    if names is not None:
        known = {c.name: c for c in out}
        bad = [n for n in names if n not in known]
        if bad:
            raise FusionDataError(f"best_candidates: no model row named {bad[0]!r}; rows: {sorted(known)}")
        out = [known[n] for n in names]
    return out


def candidate_predict(data: ExperimentData, tr: Sequence[str], va: Sequence[str], opts: ExperimentOptions,
                      cand: Candidate, seed: int) -> np.ndarray:
    """The candidate fitted on ``tr`` (all its own preprocessing and tuning inside ``tr``, a strategy's option grid
    included: fusion.tuning), predictions for ``va``."""
    if cand.kind == "baseline":
        from fusion.baseline_runs import baseline_fold, baseline_matrix

        return baseline_fold(data, tr, va, opts, baseline_matrix(data, cand.modalities))[0]
    if cand.kind == EXPERTS:
        from fusion.experts import experts_fold

        return experts_fold(data, tr, va, opts, cand.modalities)[0]
    from fusion.tuning import fit_predict_tuned

    return fit_predict_tuned(data, tr, va, opts, cand.strategy, list(cand.modalities), cand.head, seed)[0]


def inner_scores(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions,
                 cand: Candidate) -> list[float]:
    """Per outer fold k: the candidate's mean primary metric over inner folds of ``splits[k]``'s training
    patients (the inner folds of fold k are the same for every candidate); -inf where no inner fold could be
    scored or the candidate cannot be fitted there."""
    from fusion.selection import inner_cv_mean, inner_splits

    out = []
    for k, (tr, _va) in enumerate(splits):
        seed = opts.seed + 1000 * k
        out.append(inner_cv_mean(data, inner_splits(data, tr, opts.inner_folds, seed),
                                 lambda a, b, s: candidate_predict(data, a, b, opts, cand, s), seed))
    return out


def nested_row(name: str, results: Sequence[ModelResult], cands: Sequence[Candidate],
               scores: dict[str, list[float]]) -> ModelResult:
    """The row that takes, in each outer fold, the prediction and metrics of the candidate with the best inner
    score (ties: the earlier candidate). ``extra['chosen']``: the winner per fold; ``extra['inner']``: every
    candidate's inner score per fold."""
    by_name = {r.name: r for r in results}
    n_folds = len(next(iter(by_name.values())).folds)
    chosen, folds, fold_metrics, oofs, inner = [], [], [], [], []
    for k in range(n_folds):
        per = {c.name: scores[c.name][k] for c in cands}
        win = max(cands, key=lambda c: per[c.name])  # max keeps the first of equal scores
        r = by_name[win.name]
        chosen.append(win.name)
        folds.append(r.folds[k])
        fold_metrics.append(dict(r.fold_metrics[k]))
        oofs.append(r.oof[r.oof["fold"] == k])
        inner.append({c: (round(v, 4) if np.isfinite(v) else None) for c, v in per.items()})
    first = by_name[cands[0].name]
    mods = list(dict.fromkeys(m for c in cands for m in c.modalities))
    return ModelResult(name, "best", mods, None, first.metric, folds, fold_metrics,
                       pd.concat(oofs, ignore_index=True),
                       {"chosen": chosen, "tuned": [{"chosen": c, "inner": i} for c, i in zip(chosen, inner)]})


def best_rows(data: ExperimentData, splits: Sequence[Split], opts: ExperimentOptions,
              results: Sequence[ModelResult], score_all: Callable[[list[Candidate]], list[list[float]]],
              names: Sequence[str] | None = None) -> list[ModelResult]:
    """The ``best`` row (nested selection over the candidates: every row of ``candidates_of``, or those named)
    and the ``best:single`` row (nested selection over the single-modality rows; none without single rows).

    ``score_all(candidates) -> inner scores per candidate`` runs ``inner_scores`` (on a process pool or here).
    """
    cands = candidates_of(results, names)
    if not cands:
        raise FusionDataError("best: no candidate model among the experiment's rows")
    scores = dict(zip([c.name for c in cands], score_all(cands)))
    rows = [nested_row(BEST, results, cands, scores)]
    singles = [c for c in candidates_of(results) if c.is_single]
    missing = [c for c in singles if c.name not in scores]
    if missing:
        scores.update(zip([c.name for c in missing], score_all(missing)))
    if singles:
        rows.append(nested_row(BEST_SINGLE, results, singles, scores))
    return rows
