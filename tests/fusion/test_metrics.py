"""Tests for fusion.metrics (the one c-index and the one ROC AUC every caller shares) and the Cox loss in
fusion.heads, on hand-computed examples and against independent implementations on a known data set."""

import math

import numpy as np
import pytest
import torch
from lifelines.datasets import load_rossi
from lifelines.utils import concordance_index as lifelines_c_index

from fusion.errors import FusionDataError
from fusion.heads import cox_ph_loss
from fusion.metrics import c_index, roc_auc
from fusion.task_metrics import classification_metrics, survival_metrics


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
    # equal times of two events are not comparable: only (0,1) and (0,2) count here
    assert c_index(np.array([1.0, 2.0, 2.0]), np.array([True, True, True]), np.array([3.0, 1.0, 2.0])) == 1.0


def test_c_index_matches_lifelines_on_rossi():
    """Rossi recidivism data (432 released prisoners, 114 re-arrests, many tied weeks): prior convictions
    as the risk; lifelines takes a survival-time-like score, hence the minus sign."""
    d = load_rossi()
    time, event, risk = d["week"].to_numpy(float), d["arrest"].to_numpy(bool), d["prio"].to_numpy(float)
    ours = c_index(time, event, risk)
    assert ours == pytest.approx(lifelines_c_index(time, -risk, event), abs=1e-12)
    assert 0.55 < ours < 0.7  # more prior convictions, earlier re-arrest
    # the experiment engine's survival metric is this very function
    assert survival_metrics(time, event, risk)["c_index"] == ours


def test_c_index_bad_input_raises():
    with pytest.raises(FusionDataError, match="no comparable pair"):
        c_index(np.array([1.0, 2.0]), np.array([False, False]), np.array([0.1, 0.2]))
    with pytest.raises(FusionDataError, match="NaN"):
        c_index(np.array([1.0, 2.0]), np.array([True, True]), np.array([0.1, np.nan]))
    with pytest.raises(FusionDataError, match="same length"):
        c_index(np.array([1.0, 2.0]), np.array([True, True]), np.array([0.1]))


def test_roc_auc_hand_computed():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    # (pos, neg) pairs: (0.5, 0.5) tie 0.5; (0.5, 0.2) 1; (0.4, 0.5) 0; (0.4, 0.2) 1 -> 2.5 / 4
    assert roc_auc(y, np.array([0.5, 0.2, 0.5, 0.4])) == pytest.approx(0.625)
    # [N, 2] probabilities: the class-1 column
    assert roc_auc(y, np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))  # a single class: undefined
    with pytest.raises(FusionDataError, match="2 labels but 3 scores"):
        roc_auc(np.array([0, 1]), np.array([0.2, 0.3, 0.4]))


def test_roc_auc_multiclass_macro_over_present_classes():
    y = np.array([0, 1, 2])
    assert roc_auc(y, np.eye(3)) == 1.0
    y = np.array([0, 0, 1, 1])  # class 2 absent: left out of the mean, never a NaN
    p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    # class 0 vs rest: 0.8, 0.3 (pos) vs 0.2, 0.5 (neg) -> 3/4; class 1: 0.7, 0.4 vs 0.1, 0.6 -> 3/4
    assert roc_auc(y, p) == pytest.approx(0.75)
    assert classification_metrics(y, p, 3)["auc"] == roc_auc(y, p)
    # all classes present: sklearn's own macro one-vs-rest
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    p = rng.dirichlet(np.ones(3), 60) + 0.3 * np.eye(3)[y]
    p /= p.sum(1, keepdims=True)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


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


def test_rank_auc_and_balanced_accuracy_equal_scikit_learn_on_random_folds_with_ties():
    """The engine's own AUC (Mann-Whitney on average ranks) and balanced accuracy give scikit-learn's values
    exactly, binary and macro one-vs-rest, with heavy ties (scores rounded to one decimal)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from fusion.metrics import balanced_accuracy

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(4, 40))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = np.round(rng.random(n), 1)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        k = 3
        yk = rng.integers(0, k, n)
        yk[:2] = [0, 2]
        p = rng.dirichlet(np.ones(k), n).round(1)
        present = np.unique(yk)
        expected = np.mean([roc_auc_score(yk == c, p[:, c]) for c in present])
        assert roc_auc(yk, p) == pytest.approx(expected, abs=1e-12)
        pred = rng.integers(0, k, n)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert balanced_accuracy(yk, pred) == pytest.approx(balanced_accuracy_score(yk, pred), abs=1e-12)
