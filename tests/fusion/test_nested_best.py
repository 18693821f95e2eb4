"""Nested selection across models (fusion.nested): the 'best' row takes, per outer fold, the outer prediction of
the candidate that wins an inner CV on the outer training patients only; 'best:single' does it among singles."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import nested
from fusion.experiment import ExperimentOptions, paired_gain, run_experiment
from tests.fusion.experiment_tables import kfold_splits, planted_table


@pytest.fixture(scope="module")
def planted(one_torch_thread):
    """Two classes; modality a carries the signal, b is noise; every inner fit's patients are recorded."""
    data = planted_table("classification", n=160, d=12, seed=4, strength=1.2, n_classes=2)
    splits = kfold_splits(data, k=3, seed=1)
    seen: list[tuple[set, set]] = []
    real = nested.candidate_predict

    def spy(data_, tr, va, opts, cand, seed):
        seen.append((set(tr), set(va)))
        return real(data_, tr, va, opts, cand, seed)

    mp = pytest.MonkeyPatch()
    mp.setattr(nested, "candidate_predict", spy)
    opts = ExperimentOptions(strategies=["early", "experts"], epochs=25, robustness=False, best=True, inner_folds=3)
    try:
        res = {r.name: r for r in run_experiment(data, splits, opts)}
    finally:
        mp.undo()
    return data, splits, res, seen


def test_best_rows_take_the_chosen_models_outer_predictions(planted):
    data, splits, res, _ = planted
    best = res["best"]
    assert len(best.extra["chosen"]) == len(splits)
    for k, name in enumerate(best.extra["chosen"]):
        chosen = res[name]
        assert best.folds[k] == chosen.folds[k]
        a = best.oof[best.oof["fold"] == k].drop(columns="fold").reset_index(drop=True)
        b = chosen.oof[chosen.oof["fold"] == k].drop(columns="fold").reset_index(drop=True)
        assert a.equals(b)
        inner = best.extra["tuned"][k]["inner"]
        assert inner[name] == max(v for v in inner.values() if v is not None)
    row = best.row()
    assert row["chosen"] == best.extra["chosen"] and row["strategy"] == "best"


def test_best_single_picks_the_signal_modality_and_best_does_no_harm(planted):
    _, _, res, _ = planted
    assert res["best:single"].extra["chosen"] == ["single:a"] * 3  # b is pure noise
    assert all("b" != name.split(":")[-1] for name in res["best"].extra["chosen"])
    gain, se = paired_gain(res["best"], res["best:single"])
    assert gain >= -se  # never below the nested best single by more than one paired standard error
    assert res["best"].mean > 0.8


def test_the_outer_validation_patients_are_never_seen_by_the_selection(planted):
    data, splits, _, seen = planted
    outer_vals = [set(va) for _, va in splits]
    assert seen, "the inner CV ran no fit"
    for tr, va in seen:
        # every inner fit lies inside one outer training part: disjoint from that fold's validation patients
        assert any(not (tr | va) & ov and (tr | va) <= set(data.patients) - ov for ov in outer_vals)


def test_unknown_candidate_names_are_refused(planted):
    _, _, res, _ = planted
    from fusion.errors import FusionDataError

    with pytest.raises(FusionDataError, match="best_candidates: no model row named 'fusion:nope'"):
        nested.candidates_of(list(res.values()), ["fusion:nope"])
    names = [c.name for c in nested.candidates_of(list(res.values()))]
    assert "best" not in names and "baseline:logistic" in names and "fusion:experts" in names
    assert np.isfinite(res["best"].mean)
