"""Survival functions for the integrated Brier score: Breslow against two references, the NLL step
function by hand, IBS ordering on a Weibull cohort, and the engine's ibs / ibs_km on every model row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.experiment import ExperimentOptions, ModelResult, run_experiment
from fusion.survival_functions import (BreslowBaseline, cox_survival_fn, ibs_times, integrated_brier, km_survival,
                                       nll_survival)
from fusion.task_metrics import survival_metrics
from tests.fusion.experiment_tables import kfold_splits, planted_table


def _tied_cohort(n: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    time = np.round(rng.exponential(np.exp(-x @ np.array([0.8, -0.5]))), 1) + 0.1  # rounded: many ties
    event = rng.random(n) < 0.7
    return x, time, event


def test_breslow_matches_sksurv_breslow_estimator_between_and_at_event_times():
    from sksurv.linear_model.coxph import BreslowEstimator

    _, time, event = _tied_cohort()
    eta = np.random.default_rng(1).normal(size=time.size) * 2
    ref = BreslowEstimator().fit(eta, event, time)
    times = np.unique(np.r_[np.linspace(time.min(), time.max(), 41), time])
    base = BreslowBaseline.fit(eta, time, event)
    np.testing.assert_allclose(base.cumulative_hazard(times), ref.cum_baseline_hazard_(times), rtol=0, atol=1e-6)
    new_eta = np.array([-3.0, 0.0, 1.5, 4.0])
    expected = np.stack([f(times) for f in ref.get_survival_function(new_eta)])
    np.testing.assert_allclose(base.survival(new_eta, times), expected, rtol=0, atol=1e-6)
    assert base.cumulative_hazard(np.array([time.min() - 1]))[0] == 0.0  # before the first event


def test_breslow_matches_lifelines_coxph_survival_function():
    from lifelines import CoxPHFitter

    x, time, event = _tied_cohort(seed=3)
    df = pd.DataFrame(x, columns=["a", "b"]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(df, "T", "E")
    eta = x @ cph.params_[["a", "b"]].to_numpy()
    times = np.unique(time)  # lifelines interpolates between its own time points; compare where it does not
    expected = cph.predict_survival_function(df.iloc[:6][["a", "b"]], times=times).T.to_numpy()
    got = cox_survival_fn(eta, time, event, eta[:6])(times)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_nll_survival_by_hand_on_three_bins():
    hazards = np.array([[0.1, 0.5, 0.9], [0.2, 0.0, 0.3]])
    edges = np.array([2.0, 5.0])  # bins (-inf, 2], (2, 5], (5, inf)
    times = np.array([0.5, 2.0, 3.0, 5.0, 7.0, 100.0])
    s0, s1 = 0.9 * 0.5, 0.8 * 1.0
    expected = [[1, 0.9, 0.9, s0, s0, s0], [1, 0.8, 0.8, s1, s1, s1]]
    np.testing.assert_allclose(nll_survival(hazards, edges, times), expected, atol=1e-12)
    rng = np.random.default_rng(0)
    s = nll_survival(rng.random((20, 6)), np.sort(rng.random(5) * 10), np.linspace(-1, 12, 200))
    assert (np.diff(s, axis=1) <= 0).all() and (s <= 1).all() and (s >= 0).all()


def test_ibs_orders_true_model_below_kaplan_meier_below_anti_model():
    rng = np.random.default_rng(4)
    n, k, lam = 400, 1.5, 10.0
    x = rng.normal(size=n)
    beta = 1.2
    t_true = lam * (rng.exponential(size=n) * np.exp(-beta * x)) ** (1 / k)  # Weibull PH: H(t|x) = (t/lam)^k e^{bx}
    cens = rng.uniform(0, 2.5 * lam, size=n)
    time, event = np.minimum(t_true, cens), t_true <= cens
    tr, va = np.arange(250), np.arange(250, n)
    grid = ibs_times(time[va], event[va], time[tr])
    assert grid.size == 15 and grid.min() >= time[va].min() and grid.max() < min(time[va].max(), time[tr].max())

    def ibs(surv):
        return integrated_brier(time[va], event[va], time[tr], event[tr], surv, grid)

    true = np.exp(-((grid[None, :] / lam) ** k) * np.exp(beta * x[va, None]))
    anti = np.exp(-((grid[None, :] / lam) ** k) * np.exp(-beta * x[va, None]))
    km = np.broadcast_to(km_survival(time[tr], event[tr], grid), (va.size, grid.size))
    breslow = cox_survival_fn(beta * x[tr], time[tr], event[tr], beta * x[va])(grid)
    assert ibs(true) < ibs(km) - 0.02 and ibs(anti) > ibs(km) + 0.02, (ibs(true), ibs(km), ibs(anti))
    assert abs(ibs(breslow) - ibs(true)) < 0.01  # Breslow with the true coefficient recovers the true model
    m = survival_metrics(time[va], event[va], beta * x[va], time[tr], event[tr],
                         lambda ts: cox_survival_fn(beta * x[tr], time[tr], event[tr], beta * x[va])(ts))
    assert m["ibs"] == pytest.approx(ibs(breslow)) and m["ibs_km"] == pytest.approx(ibs(km))
    few = np.arange(20) < 3  # 3 validation events (< 5): no grid, NaN rather than an error
    m = survival_metrics(time[va][:20], few, x[va][:20], time[tr], event[tr], lambda ts: np.ones((20, ts.size)))
    assert np.isnan(m["ibs"]) and np.isnan(m["ibs_km"]) and np.isfinite(m["c_index"])


def test_late_validation_patients_leave_the_score_unchanged():
    """A validation time past the last training time: sksurv raises unless the training censoring KM hits 0;
    where it does not raise (last training time censored), our recording gives the same score."""
    from sksurv.metrics import integrated_brier_score

    rng = np.random.default_rng(5)
    tt, te = np.r_[rng.exponential(5, 60), 30.0], np.r_[rng.random(60) < 0.7, False]  # last training time censored
    tv, ev = np.r_[rng.exponential(5, 40), 35.0, 40.0], np.r_[rng.random(40) < 0.7, True, False]
    grid = ibs_times(tv, ev, tt)
    surv = np.exp(-grid[None, :] / rng.uniform(3, 8, size=(tv.size, 1)))
    dt = [("event", bool), ("time", float)]
    ref = integrated_brier_score(np.array(list(zip(te, tt)), dtype=dt), np.array(list(zip(ev, tv)), dtype=dt),
                                 surv, grid)
    assert integrated_brier(tv, ev, tt, te, surv, grid) == pytest.approx(ref, abs=1e-12)
    te[-1] = True  # now the censoring KM stays > 0: sksurv alone raises, ours still scores
    with pytest.raises(ValueError):
        integrated_brier_score(np.array(list(zip(te, tt)), dtype=dt), np.array(list(zip(ev, tv)), dtype=dt),
                               surv, grid)
    assert np.isfinite(integrated_brier(tv, ev, tt, te, surv, grid))


def test_row_means_over_finite_folds_and_counts_them():
    fm = [{"c_index": 0.6, "ibs": 0.2}, {"c_index": 0.7, "ibs": float("nan")}, {"c_index": 0.8, "ibs": 0.1}]
    row = ModelResult("m", "single", ["a"], "cox", "c_index", [0.6, 0.7, 0.8], fm, pd.DataFrame()).row()
    assert row["other_metrics"]["ibs"] == pytest.approx(0.15) and row["other_metrics_folds"]["ibs"] == 2


def test_engine_reports_finite_ibs_for_every_survival_model_and_both_heads():
    data = planted_table("survival", n=90, d=12, seed=2, strength=2.0)
    opts = ExperimentOptions(epochs=15, n_components=4, robustness=False, strategies=("late",), lr=3e-3,
                             heads=("cox", "nll"), coxnet_n_alphas=8)
    res = {r.name: r.row() for r in run_experiment(data, kfold_splits(data, k=3), opts)}
    assert set(res) == {"baseline:coxnet", "single:a", "single:b", "fusion:late", "single:a/nll", "single:b/nll",
                        "fusion:late/nll"}
    for name, row in res.items():
        om = row["other_metrics"]
        assert np.isfinite(om["ibs"]) and 0 < om["ibs"] < 0.5 and row["other_metrics_folds"]["ibs"] == 3, name
        assert om["ibs_km"] == pytest.approx(res["baseline:coxnet"]["other_metrics"]["ibs_km"])  # same folds
    km = res["baseline:coxnet"]["other_metrics"]["ibs_km"]
    for name in ("baseline:coxnet", "single:a"):  # the planted signal beats the null model
        assert res[name]["other_metrics"]["ibs"] < km - 0.02, (name, res[name]["other_metrics"], km)
