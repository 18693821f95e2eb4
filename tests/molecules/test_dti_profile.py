"""Profile features: out of fold for training pairs (a pair's own value never enters its row), neighbours
found by hand on a duplicated target, and the profile GBT beating the additive baseline on a low-rank matrix."""

from __future__ import annotations

import numpy as np
import pytest

from molecules.dti_data import DTITable
from molecules.dti_metrics import mse
from molecules.dti_profile import FEATURE_NAMES, ProfileFeatures, ProfileGBT, out_of_fold
from molecules.model_card import additive_baseline

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _grid(values: np.ndarray, keep: np.ndarray) -> DTITable:
    """Table of the cells of a drugs x targets matrix where ``keep``; drugs are alkanes C1..Cn (valid SMILES)."""
    n_d, n_t = values.shape
    d, t = np.nonzero(keep)
    return DTITable(["C" * (i + 1) for i in range(n_d)], [f"T{j}" for j in range(n_t)], None, d, t, values[d, t])


def test_out_of_fold_rows_ignore_their_own_value():
    rng = np.random.default_rng(0)
    values = 6.0 + rng.normal(0, 1, (8, 12))
    table = _grid(values, np.ones((8, 12), dtype=bool))
    feats = out_of_fold(table, folds=5, seed=3)
    fold = np.random.default_rng(3).integers(0, 5, len(table))
    i = 17
    same_drug = (fold != fold[i]) & (table.drug_idx == table.drug_idx[i])
    assert feats[i, COL["drug_mean"]] == pytest.approx(table.value[same_drug].mean(), rel=1e-5)
    moved = DTITable(table.smiles, table.targets, None, table.drug_idx, table.target_idx,
                     np.where(np.arange(len(table)) == i, 99.0, table.value))
    again = out_of_fold(moved, folds=5, seed=3)
    assert np.array_equal(again[i], feats[i], equal_nan=True)  # its own value is nowhere in its row
    assert not np.array_equal(again, feats, equal_nan=True)  # ... but it is in other folds' rows


def test_a_duplicated_target_is_the_top_neighbour():
    rng = np.random.default_rng(1)
    values = 6.0 + rng.normal(0, 1, (10, 6))
    values[:, 5] = values[:, 0]  # target 5 measures exactly what target 0 does (a mutant of the same kinase)
    keep = np.ones_like(values, dtype=bool)
    keep[3, 5] = False  # the cell to predict
    feats = ProfileFeatures(_grid(values, keep)).transform(_grid(values, ~keep))
    assert feats[0, COL["target_profile_k3_top_sim"]] > 0.99  # below 1 only as its mean lacks drug 3
    assert feats[0, COL["target_profile_k3_top_value"]] == pytest.approx(values[3, 0])
    assert np.isnan(feats[0, COL["target_sequence_k3_mean"]])  # no sequences in the table


def test_profile_gbt_beats_the_additive_baseline_on_a_low_rank_matrix():
    rng = np.random.default_rng(2)
    drugs, targets = rng.normal(0, 1, (20, 2)), rng.normal(0, 1, (30, 2))
    values = 6.0 + drugs @ targets.T + rng.normal(0, 0.1, (20, 30))
    test = rng.random((20, 30)) < 0.2
    train_t, test_t = _grid(values, ~test), _grid(values, test)
    pred = ProfileGBT(max_iter=150, learning_rate=0.1).fit(train_t).predict(test_t)
    add = mse(test_t.value, additive_baseline(train_t, test_t))
    assert add > 1.0  # the interaction term is large: drug + target means cannot fit it
    assert mse(test_t.value, pred) < 0.25 * add
