import numpy as np
import pandas as pd
import pytest

from fusion.errors import OmicsFormatError
from omics.survival import cox_univariate


def _hand_loglik(beta, x, time, event):
    """Breslow partial log-likelihood written out sample by sample (the definition)."""
    total = 0.0
    for i in np.flatnonzero(event):
        at_risk = time >= time[i]
        total += beta * x[i] - np.log(np.exp(beta * x[at_risk]).sum())
    return total


def test_cox_hand_checkable_two_samples():
    # Two samples, one death at t=1 in the sample with x=1, the other (x=0) censored later.
    # L(b) = e^b / (e^b + 1): monotone -> no finite maximum; the fit must say it did not converge.
    res = cox_univariate(np.array([[1.0], [0.0]]), np.array([1.0, 2.0]), np.array([1, 0]))
    assert not res["converged"].iloc[0]
    assert res["coef"].iloc[0] > 5


def test_cox_three_samples_closed_form():
    # deaths at t=1 (x=1) and t=2 (x=0), censored at t=3 (x=1). Breslow partial likelihood:
    # L(b) = e^b/(2e^b+1) * 1/(e^b+1); dl/db = 1 - 2e^b/(2e^b+1) - e^b/(e^b+1) = 0
    # -> (2u+1)(u+1) = 2u(u+1) + u(2u+1) with u = e^b -> 2u^2 = 1 -> b = -ln(2)/2.
    x = np.array([[1.0], [0.0], [1.0]])
    res = cox_univariate(x, np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0]))
    assert res["coef"].iloc[0] == pytest.approx(-np.log(2) / 2, abs=1e-8)
    u = 1 / np.sqrt(2)
    assert res["hazard_ratio"].iloc[0] == pytest.approx(u, abs=1e-8)
    # information at the optimum: 2u/(2u+1)^2 + u/(u+1)^2
    assert res["se"].iloc[0] == pytest.approx(1 / np.sqrt(2 * u / (2 * u + 1) ** 2 + u / (u + 1) ** 2), rel=1e-6)
    assert res["converged"].iloc[0]


def _survival_data(seed=0, n=120, g=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, g))
    x[:, 2] = x[:, 2] * 4 + 20  # shifted/scaled values: coefficient is per unit of the raw value
    risk = 0.9 * x[:, 0] - 0.15 * (x[:, 2] - 20)
    t_event = rng.exponential(365.0 * np.exp(-risk))
    t_censor = rng.uniform(100, 1500, size=n)
    time = np.minimum(t_event, t_censor)
    event = (t_event <= t_censor).astype(int)
    return x, time, event


def test_cox_matches_lifelines_and_definition():
    lifelines = pytest.importorskip("lifelines")
    x, time, event = _survival_data()
    genes = [f"G{j}" for j in range(x.shape[1])]
    res = cox_univariate(x, time, event, genes)
    assert res["converged"].all()
    for j, gene in enumerate(genes):
        frame = pd.DataFrame({"x": x[:, j], "T": time, "E": event})
        cph = lifelines.CoxPHFitter().fit(frame, "T", "E")
        assert res.loc[gene, "coef"] == pytest.approx(cph.params_["x"], abs=1e-3)
        assert res.loc[gene, "se"] == pytest.approx(cph.standard_errors_["x"], abs=1e-3)
        assert res.loc[gene, "p_value"] == pytest.approx(cph.summary.loc["x", "p"], abs=1e-3)
    # the coefficient maximises the partial likelihood as defined sample by sample
    b = res.loc["G0", "coef"]
    ll = [_hand_loglik(b + d, x[:, 0], time, event) for d in (-1e-3, 0.0, 1e-3)]
    assert ll[1] >= ll[0] and ll[1] >= ll[2]


def test_planted_prognostic_gene_recovered():
    x, time, event = _survival_data(seed=3, n=200, g=50)
    res = cox_univariate(x, time, event, [f"G{j}" for j in range(50)])
    top = res.sort_values("p_value").index[:2]
    assert set(top) == {"G0", "G2"}
    assert res.loc["G0", "coef"] == pytest.approx(0.9, abs=0.25)
    assert res.loc["G2", "coef"] == pytest.approx(-0.15, abs=0.06)
    assert res.loc["G0", "fdr"] < 1e-6
    # fitting genes in blocks gives the same answer as all at once
    blocked = cox_univariate(x, time, event, [f"G{j}" for j in range(50)], chunk_genes=7)
    pd.testing.assert_frame_equal(blocked, res)


def test_constant_gene_is_nan_and_bad_input():
    x = np.c_[np.ones(10), np.arange(10.0)]
    res = cox_univariate(x, np.arange(1.0, 11.0), np.r_[np.ones(5), np.zeros(5)])
    assert np.isnan(res["coef"].iloc[0]) and np.isfinite(res["coef"].iloc[1])
    with pytest.raises(OmicsFormatError, match="event"):
        cox_univariate(x, np.arange(10.0), np.full(10, 2))
    with pytest.raises(OmicsFormatError, match="no events"):
        cox_univariate(x, np.arange(10.0), np.zeros(10))


def test_logrank_by_hand():
    # The product's log-rank test is lifelines' (flows.experiments.report's Kaplan-Meier panel); check it on
    # a hand-worked data set. Group A dies at t=1 and t=3; group B dies at t=2, censored at t=4.
    # t=1: n=4 (A2,B2), d=1: E_A=1/2, V=1/4;  t=2: n=3 (A1,B2), d=1: E_A=1/3, V=2/9;
    # t=3: n=2 (A1,B1), d=1: E_A=1/2, V=1/4.   O_A=2, E_A=4/3, V=13/18 -> chi2 = (2/3)^2 / (13/18) = 8/13
    stats_mod = pytest.importorskip("lifelines.statistics")
    from scipy import stats

    res = stats_mod.logrank_test(np.array([1.0, 3.0]), np.array([2.0, 4.0]), np.array([1, 1]), np.array([1, 0]))
    assert res.test_statistic == pytest.approx(8 / 13, abs=1e-9)
    assert res.degrees_of_freedom == 1
    assert res.p_value == pytest.approx(stats.chi2.sf(8 / 13, 1), abs=1e-9)
