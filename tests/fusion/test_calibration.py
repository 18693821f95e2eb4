"""Temperature scaling and the top-label ECE: known temperatures recovered, ECE by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from fusion.calibration import (calibration_summary, crossfit_temperature, expected_calibration_error,
                                fit_temperature, log_probs_from_predictions, oof_log_probs, reliability_bins)
from fusion.errors import FusionDataError


def _overconfident(n: int, k: int, t_true: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(l); the model reports softmax(l * t_true): over-confident by t_true."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    p = np.exp(log_softmax(logits, axis=1))
    y = (p.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    return log_softmax(logits * t_true, axis=1), y


@pytest.mark.parametrize("k,t_true", [(2, 2.5), (3, 0.6), (4, 1.0)])
def test_fit_temperature_recovers_known_temperature(k, t_true):
    logp, y = _overconfident(20000, k, t_true, seed=k)
    assert fit_temperature(logp, y) == pytest.approx(t_true, rel=0.06)


def test_scaling_lowers_ece_of_overconfident_predictions():
    logp, y = _overconfident(4000, 3, 3.0, seed=7)
    folds = np.arange(len(y)) % 5
    s = calibration_summary(logp, y, folds)
    assert s["temperature"] == pytest.approx(3.0, rel=0.15)
    assert s["ece_before"] > 0.1 and s["ece_after"] < 0.03 and s["ece_after_crossfit"] < 0.03
    assert s["nll_after"] < s["nll_before"]
    scaled, temps = crossfit_temperature(logp, y, folds)
    assert len(temps) == 5 and np.allclose(np.exp(scaled).sum(axis=1), 1.0)


def test_ece_and_reliability_bins_by_hand():
    # top-class confidences 0.9, 0.8, 0.6, 0.55 (bins of width 0.5: (0, .5], (.5, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1])  # hits: yes, no, yes, yes
    t = reliability_bins(probs, y, n_bins=2)
    assert t["count"].tolist() == [0, 4]
    assert t.loc[1, "confidence"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.55) / 4)
    assert t.loc[1, "accuracy"] == pytest.approx(0.75)
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(abs(0.75 - 0.7125))
    # 10 bins: 0.9 -> bin 8, 0.8 -> 7, 0.6 -> 5, 0.55 -> 5; ECE = (|1-.9| + |0-.8| + 2|1-.575|) / 4
    assert expected_calibration_error(probs, y) == pytest.approx((0.1 + 0.8 + 2 * 0.425) / 4)


def test_oof_log_probs_binary_and_multiclass():
    binary = pd.DataFrame({"patient": ["a", "b"], "fold": [0, 1], "prediction": [0.25, 1.0]})
    pats, folds, lp = oof_log_probs(binary)
    assert pats == ["a", "b"] and folds.tolist() == [0, 1]
    assert np.exp(lp[0]) == pytest.approx([0.75, 0.25]) and np.isfinite(lp).all()
    multi = pd.DataFrame({"patient": ["a"], "fold": [0], "p_1": [0.3], "p_0": [0.5], "p_2": [0.2]})
    assert np.exp(oof_log_probs(multi)[2][0]) == pytest.approx([0.5, 0.3, 0.2])
    with pytest.raises(FusionDataError, match="labels"):
        fit_temperature(log_probs_from_predictions(np.array([0.2, 0.7])), np.array([0, 2]))
