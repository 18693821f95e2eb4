"""Tests for fusion.metrics and the Cox loss in fusion.heads, on hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from fusion.errors import FusionDataError
from fusion.heads import cox_ph_loss
from fusion.metrics import c_index, r2, rmse, roc_auc


def test_c_index_perfect_and_reversed():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.ones(4, dtype=bool)
    assert c_index(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert c_index(time, event, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0


def test_c_index_hand_computed_with_censoring_and_ties():
    # comparable pairs (i event, t_i < t_j): (0,1) (0,2) (0,3) (2,3); patient 1 censored
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([True, False, True, False])
    risk = np.array([0.9, 0.9, 0.5, 0.7])
    # (0,1): tie -> 0.5; (0,2): 0.9 > 0.5 -> 1; (0,3): 0.9 > 0.7 -> 1; (2,3): 0.5 < 0.7 -> 0
    assert c_index(time, event, risk) == pytest.approx(2.5 / 4)
    # equal times are not comparable: only (0,1) counts here
    assert c_index(np.array([1.0, 2.0, 2.0]), np.array([True, True, True]), np.array([3.0, 1.0, 2.0])) == 1.0


def test_c_index_no_comparable_pair_raises():
    with pytest.raises(FusionDataError, match="no comparable pair"):
        c_index(np.array([1.0, 2.0]), np.array([False, False]), np.array([0.1, 0.2]))


def test_roc_auc_hand_computed():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    # (pos, neg) pairs: (0.5, 0.5) tie 0.5; (0.5, 0.2) 1; (0.4, 0.5) 0; (0.4, 0.2) 1 -> 2.5 / 4
    assert roc_auc(y, np.array([0.5, 0.2, 0.5, 0.4])) == pytest.approx(0.625)
    with pytest.raises(FusionDataError, match="single class"):
        roc_auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_roc_auc_multiclass_macro_ovr():
    y = np.array([0, 1, 2])
    assert roc_auc(y, np.eye(3)) == 1.0


def test_r2_and_rmse():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 6.0])
    assert rmse(y, p) == pytest.approx(1.0)  # sqrt(4 / 4)
    assert r2(y, p) == pytest.approx(1 - 4 / 5)  # SS_tot = 2.25+0.25+0.25+2.25
    assert r2(y, y) == 1.0


def test_cox_loss_hand_computed_with_breslow_ties():
    # times 1, 2, 2, 3; events 1, 1, 1, 0; log-risks 0, ln2, 0, ln3
    log_risk = torch.tensor([0.0, math.log(2.0), 0.0, math.log(3.0)])
    time = torch.tensor([1.0, 2.0, 2.0, 3.0])
    event = torch.tensor([True, True, True, False])
    # risk sets: t=1 -> all (1+2+1+3 = 7); t=2 (both tied) -> {1,2,3} (2+1+3 = 6)
    expected = -((0 - math.log(7)) + (math.log(2) - math.log(6)) + (0 - math.log(6))) / 3
    assert cox_ph_loss(log_risk, time, event).item() == pytest.approx(expected, rel=1e-6)
    # order of the rows does not matter
    perm = torch.tensor([3, 1, 0, 2])
    assert cox_ph_loss(log_risk[perm], time[perm], event[perm]).item() == pytest.approx(expected, rel=1e-6)


def test_cox_loss_without_events_is_zero_and_differentiable():
    r = torch.zeros(3, requires_grad=True)
    loss = cox_ph_loss(r, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and r.grad is not None
