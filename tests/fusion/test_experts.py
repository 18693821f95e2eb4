"""The experts strategy (fusion.experts) on a planted cohort whose two modalities carry independent halves of
the signal: it beats each single modality, records its tuned settings per fold, scores a patient missing a
modality; and paired_gain against hand-computed fold differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment import (
    ExperimentData,
    ExperimentOptions,
    paired_gain,
    run_experiment,
)
from fusion.experts import run_experts
from tests.fusion.experiment_tables import kfold_splits

N, D, FOLDS = 240, 20, 4


def halves_cohort(task: str, seed: int = 0, n: int = N) -> ExperimentData:
    """Modalities a and b, D columns each; the first 3 columns of a hold s_a, of b hold s_b (plus noise);
    the target depends on s_a + s_b. b is absent (NaN row) for 20% of patients, a for 5%.

    survival: log-hazard = s_a + s_b, exponential times, ~25% censored; classification: binary label
    from the logistic model 2 * (s_a + s_b).
    """
    rng = np.random.default_rng(seed)
    s = {m: rng.normal(size=n) for m in "ab"}
    pats = [f"P{i:04d}" for i in range(n)]
    feats = {}
    for m, missing in (("a", 0.05), ("b", 0.20)):
        x = rng.normal(size=(n, D))
        x[:, :3] = s[m][:, None] + 0.5 * rng.normal(size=(n, 3))
        x[rng.random(n) < missing] = np.nan
        feats[m] = pd.DataFrame(x, index=pats, columns=[f"{m}{j}" for j in range(D)])
    eta = s["a"] + s["b"]
    classes = None
    if task == "survival":
        t = rng.exponential(np.exp(-eta))
        c = rng.exponential(np.quantile(t, 0.9), size=n)
        target = pd.DataFrame({"time": np.minimum(t, c), "event": t <= c}, index=pats)
    else:
        y = (rng.random(n) < 1 / (1 + np.exp(-2 * eta))).astype(int)
        target, classes = pd.DataFrame({"label": y}, index=pats), ["low", "high"]
    return ExperimentData(patients=pats, features=feats, task=task, target=target, classes=classes)


@pytest.fixture(scope="module", params=["survival", "classification"])
def run(request):
    data = halves_cohort(request.param)
    splits = kfold_splits(data, k=FOLDS)
    opts = ExperimentOptions(strategies=["experts"], epochs=40, lr=3e-3, robustness=False, baseline=False)
    res = {r.name: r for r in run_experiment(data, splits, opts)}
    classical = {m: run_experts(data, splits, opts, [m]) for m in "ab"}  # one expert alone: the classical single
    return data, res, classical


def test_experts_beats_each_single_modality(run):
    data, res, classical = run
    experts = res["fusion:experts"]
    assert experts.strategy == "experts" and experts.metric == ("c_index" if data.task == "survival" else "auc")
    singles = {n: r.mean for n, r in res.items() if r.strategy == "single"}
    assert set(singles) == {"single:a", "single:b"}
    best = max(list(singles.values()) + [r.mean for r in classical.values()])
    assert experts.mean > best + 0.03, (experts.mean, singles, {m: r.mean for m, r in classical.items()})
    gain, se = paired_gain(experts, max(classical.values(), key=lambda r: r.mean))
    assert gain > 0.03 and se < gain


def test_chosen_settings_are_recorded_per_fold(run):
    data, res, _ = run
    tuned = res["fusion:experts"].row()["tuned"]
    assert len(tuned) == FOLDS
    key = "alpha" if data.task == "survival" else "C"
    for fold in tuned:
        # survival: the joint expert (CoxNet over both modalities, no PCA) is stacked with the per-modality ones
        assert set(fold) == ({"a", "b", "joint"} if data.task == "survival" else {"a", "b"})
        for name, s in fold.items():
            assert s["n_components"] == (2 * D if name == "joint" else 10) and s[key] > 0 and s["n_train"] > 100
        if data.task == "survival":  # stacking weights: non-negative, summing to 1
            assert all(s["weight"] >= 0 for s in fold.values())
            assert sum(s["weight"] for s in fold.values()) == pytest.approx(1.0, abs=1e-3)


def test_survival_stacking_gives_a_noise_modality_no_weight_and_beats_the_plain_mean():
    """A third modality of pure noise: the stacked weights (fitted on the experts' out-of-fold risks of each
    training fold) leave it next to out (observed: 0.07 against 0.23 and 0.27 for a and b, 0.43 joint), and the stacked experts score above the plain mean of the experts."""
    from fusion.experts import experts_fold
    from fusion.metrics import c_index

    data = halves_cohort("survival", seed=2, n=150)
    rng = np.random.default_rng(5)
    data.features["noise"] = pd.DataFrame(rng.normal(size=(150, D)), index=data.patients)
    splits = kfold_splits(data, k=3)
    opts = ExperimentOptions(strategies=["experts"])
    res = run_experts(data, splits, opts, ["a", "b", "noise"])
    w = {m: np.mean([f[m]["weight"] for f in res.extra["tuned"]]) for m in ("a", "b", "noise", "joint")}
    assert w["noise"] < 0.1 and w["noise"] < min(w["a"], w["b"]) / 2, w
    plain = []
    for tr, va in splits:  # the plain mean of the three per-modality experts' z-scored risks, by hand
        risks = [experts_fold(data, tr, va, opts, [m])[0] for m in ("a", "b", "noise")]  # each: its z-scored risk
        t = data.target.loc[va]
        plain.append(c_index(t["time"].to_numpy(), t["event"].to_numpy(bool), np.mean(risks, axis=0)))
    assert res.mean > np.mean(plain), (res.folds, plain)


def test_patient_missing_a_modality_gets_a_prediction(run):
    data, res, _ = run
    oof = res["fusion:experts"].oof
    assert sorted(oof["patient"]) == sorted(data.patients)
    pred = oof["prediction"].to_numpy()  # survival risk, or P(class 1) of the binary task
    missing_b = ~data.has_modality("b", list(oof["patient"]))
    assert missing_b.sum() > 20 and np.isfinite(pred).all()
    assert np.unique(pred[missing_b]).size > 20  # scored by the other expert, not a constant


def test_a_patient_missing_every_modality_gets_the_training_mean():
    data = halves_cohort("survival", seed=1)
    lost = data.patients[0]
    for m in "ab":
        data.features[m].loc[lost] = np.nan
    splits = kfold_splits(data, k=3)
    res = run_experts(data, splits, ExperimentOptions(strategies=["experts"]), ["a", "b"])
    pred = res.oof.set_index("patient")["prediction"]
    assert pred[lost] == pytest.approx(0.0, abs=1e-9)  # mean of z-scores: every expert at its training mean


def test_paired_gain_by_hand():
    fusion, single = [0.70, 0.65, 0.72, 0.60], [0.66, 0.66, 0.68, 0.58]
    d = np.array([0.04, -0.01, 0.04, 0.02])
    mean, se = paired_gain(fusion, single)
    assert mean == pytest.approx(0.0225)
    assert se == pytest.approx(np.sqrt(((d - 0.0225) ** 2).sum() / 3) / 2)  # sd (ddof=1) / sqrt(4 folds)
    assert np.isnan(paired_gain([0.7], [0.6])[1]) and paired_gain([0.7], [0.6])[0] == pytest.approx(0.1)
    with pytest.raises(FusionDataError, match="same non-zero number of folds"):
        paired_gain([0.7, 0.6], [0.6])


def test_experts_is_accepted_as_a_strategy_but_not_for_selection():
    assert list(ExperimentOptions(strategies=["late", "experts"]).strategies) == ["late", "experts"]
    with pytest.raises(FusionConfigError, match="select"):
        ExperimentOptions(select=["experts"])
