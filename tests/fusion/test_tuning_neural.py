"""The neural strategies' width and weight decay chosen by inner CV (fusion.tuning with ``ExperimentOptions.tune``):
searched only when asked, on the outer training patients only, the right option picked where one clearly is,
and the choice per fold carried to the experiment's rows (a '+select' run's one-modality fits included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion.experiment_data import ExperimentOptions
from fusion.strategy_base import NEURAL_TUNE_GRID
from fusion.strategies import get_strategy
from fusion.tuning import option_candidates
from tests.fusion.experiment_tables import kfold_splits, planted_table

NEURAL = ("early", "late", "attention", "kronecker")
FAST = dict(epochs=25, robustness=False, inner_folds=3, singles=False, baseline=False)


def _label(cand: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cand.items())


def test_the_neural_grid_is_searched_only_when_the_experiment_asks():
    n_cands = len(NEURAL_TUNE_GRID["embed_dim"]) * len(NEURAL_TUNE_GRID["weight_decay"])
    for name in NEURAL:
        assert option_candidates(name) == [{}]  # default runs unchanged: one fit with the experiment's options
        cands = option_candidates(name, tune=True)
        assert len(cands) == n_cands == 4
        assert cands[0] == {"embed_dim": 8, "weight_decay": 3.0}  # ties go to the smaller, more regularised model
    assert option_candidates("single", tune=True) == [{}]
    # bilinear keeps its own grid (always searched); tune adds nothing to it
    assert option_candidates("bilinear", tune=True) == option_candidates("bilinear")


@pytest.fixture(scope="module")
def tuned_run(one_torch_thread):
    """'early' with tune on a planted survival table; every fit's (train, validation) patients recorded."""
    import fusion.folds
    from fusion.neural_runs import run_neural

    data = planted_table("survival", n=90, d=8, seed=3, strength=1.5)
    splits = kfold_splits(data, k=2, seed=0)
    seen: list[tuple[set, set]] = []
    real = fusion.folds.fit_predict_fold

    def spy(data_, a, b, *args):
        seen.append((set(a), set(b)))
        return real(data_, a, b, *args)

    mp = pytest.MonkeyPatch()
    mp.setattr(fusion.folds, "fit_predict_fold", spy)
    try:
        res = run_neural(data, splits, ExperimentOptions(tune=True, **FAST), "early", ["a", "b"], "cox")
    finally:
        mp.undo()
    return data, splits, res, seen


def test_the_choice_never_sees_the_outer_validation_patients(tuned_run):
    data, splits, _, seen = tuned_run
    per_fold = 4 * 3 + 1  # 4 candidates x 3 inner folds, then the chosen one refitted on the training part
    assert len(seen) == per_fold * len(splits)
    for k, (tr, va) in enumerate(splits):
        fits = seen[k * per_fold:(k + 1) * per_fold]
        for a, b in fits[:-1]:  # inner fits: train and score inside the outer training part
            assert (a | b) <= set(tr) and not (a | b) & set(va) and not a & b
        assert fits[-1] == (set(tr), set(va))


def test_the_row_reports_the_chosen_options_per_fold(tuned_run):
    _, splits, res, _ = tuned_run
    row = res.row()
    assert len(row["tuned"]) == len(splits)
    labels = {_label(c) for c in option_candidates("early", tune=True)}
    for fold in row["tuned"]:
        assert set(fold["options"]) == {"embed_dim", "weight_decay"}
        assert set(fold["inner"]) == labels and all(v is not None for v in fold["inner"].values())
        win = _label(fold["options"])
        assert fold["inner"][win] == max(fold["inner"].values())  # the winner is the best inner mean
    assert res.mean > 0.7  # the planted signal is read with the tuned options


def test_inner_cv_picks_the_clearly_right_option(one_torch_thread, monkeypatch):
    """A planted grid whose first candidate (the one ties would keep) wipes every weight out (AdamW's decay x lr x
    steps >> 1): the inner CV must see that it reads nothing and take the usual decay, in every fold."""
    from fusion.neural_runs import run_neural

    data = planted_table("survival", n=90, d=8, seed=5, strength=1.5)
    splits = kfold_splits(data, k=2, seed=1)
    monkeypatch.setattr(get_strategy("attention"), "tune_grid", {"weight_decay": (300.0, 1e-2)})
    res = run_neural(data, splits, ExperimentOptions(tune=True, **FAST), "attention", ["a", "b"], "cox")
    chosen = [t["options"]["weight_decay"] for t in res.extra["tuned"]]
    assert chosen == [1e-2] * len(splits), res.extra["tuned"]
    for t in res.extra["tuned"]:
        assert t["inner"]["weight_decay=0.01"] > t["inner"]["weight_decay=300.0"] + 0.1


def test_a_selected_single_modality_is_fitted_with_the_strategys_grid(one_torch_thread):
    """'+select' on a table whose modality b is pure noise picks a alone; that 'single' fit still takes the
    strategy's grid (its options and inner scores per fold), as the selection scored it."""
    from fusion.neural_runs import run_neural

    data = planted_table("survival", n=90, d=8, seed=4, strength=2.0)
    splits = kfold_splits(data, k=2, seed=2)
    res = run_neural(data, splits, ExperimentOptions(tune=True, **FAST), "early", ["a", "b"], "cox", select=True)
    assert res.name == "fusion:early+select"
    for t in res.extra["tuned"]:
        assert "modalities" in t and "options" in t and len(t["inner"]) == 4  # the grid's inner means
    singles = [t for t in res.extra["tuned"] if t["modalities"] == ["a"]]
    assert singles, [t["modalities"] for t in res.extra["tuned"]]
    for t in singles:
        assert set(t["options"]) == {"embed_dim", "weight_decay"}


def test_the_tcga_specs_turn_tuning_on():
    from flows.experiments.spec import load_spec

    root = Path(__file__).resolve().parents[2]
    for cohort in ("blca", "ucec"):
        opts = load_spec(root / "experiments" / f"{cohort}_survival.yaml").experiment_options()
        assert opts.tune is True and opts.best is True
        assert opts.early_stopping is None  # measured to cost every neural row on BLCA (docs/experiments.md)
    assert ExperimentOptions().tune is False  # the demo run and every spec without it: unchanged
