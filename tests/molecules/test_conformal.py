"""Split-conformal intervals: the order statistic by hand, and the measured coverage of a 90 % interval
on a generated regression table (exchangeable calibration and test pairs) within binomial tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.errors import MoleculeError
from molecules.conformal import (calibration_mask, calibration_scores, conformal_halfwidth, coverage,
                                 intervals)


def test_halfwidth_is_the_ceil_n_plus_1_times_level_order_statistic():
    scores = calibration_scores(np.zeros(19), np.arange(19, 0, -1) / 10)  # |residuals| 0.1 .. 1.9
    # n = 19, level 0.9: k = ceil(20 * 0.9) = 18 -> the 18th smallest residual, 1.8
    assert conformal_halfwidth(scores, 0.9) == pytest.approx(1.8)
    assert conformal_halfwidth(scores, 0.5) == pytest.approx(1.0)  # k = ceil(10) = 10
    assert math.isinf(conformal_halfwidth(scores[:5], 0.9))  # 5 pairs cannot give a 90 % interval
    lo, hi = intervals(np.array([5.0]), scores, 0.9)
    assert (lo[0], hi[0]) == pytest.approx((3.2, 6.8))


def test_ninety_percent_interval_covers_ninety_percent_of_a_generated_table():
    rng = np.random.default_rng(3)
    n = 6000
    x = rng.uniform(-2, 2, n)
    y = 6.0 + 1.5 * x + rng.standard_t(4, n) * 0.5  # heavy-tailed noise: a Gaussian width would be wrong
    pred = 6.0 + 1.4 * x  # a slightly wrong model: conformal needs no correct model
    cal = calibration_mask(n, 0.3, seed=1)
    scores = calibration_scores(y[cal], pred[cal])
    covered = []
    for level in (0.8, 0.9, 0.95):
        lo, hi = intervals(pred[~cal], scores, level)
        covered.append(coverage(y[~cal], lo, hi))
        se = math.sqrt(level * (1 - level) / (~cal).sum())
        assert abs(covered[-1] - level) < 4 * se + 1 / (cal.sum() + 1)
    assert covered == sorted(covered)


def test_bad_levels_and_inputs_are_refused():
    with pytest.raises(MoleculeError, match="nominal"):
        conformal_halfwidth(np.ones(10), 1.5)
    with pytest.raises(MoleculeError, match="same length"):
        calibration_scores(np.ones(3), np.ones(4))
    with pytest.raises(MoleculeError, match="at least 2"):
        calibration_mask(1, 0.1)
    assert calibration_mask(10, 0.1).sum() == 1 and calibration_mask(10, 0.99).sum() == 9
