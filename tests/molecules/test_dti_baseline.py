"""DTI baselines: the additive drug + target mean by hand, matrix completion of a rank-one matrix, the table hash."""

from __future__ import annotations

import numpy as np
import pytest

from molecules.dti_data import DTITable
from molecules.model_card import additive_baseline, table_sha256

SMILES = ["CCO", "c1ccccc1O", "CC(=O)O"]


def _table(drug_idx, target_idx, value) -> DTITable:
    return DTITable(SMILES, ["T0", "T1", "T2"], None, np.asarray(drug_idx), np.asarray(target_idx),
                    np.asarray(value, dtype=float))


def test_additive_baseline_by_hand():
    train = _table([0, 0, 1, 1], [0, 1, 0, 1], [5.0, 7.0, 6.0, 8.0])
    test = _table([0, 1, 2, 1], [1, 0, 0, 2], [0.0] * 4)
    # mu = 6.5; target offsets T0 -1, T1 +1; drug offsets (after targets) d0 -0.5, d1 +0.5; unseen: 0
    assert additive_baseline(train, test) == pytest.approx([7.0, 6.0, 5.5, 7.0])


def test_matrix_completion_recovers_a_rank_one_matrix():
    rng = np.random.default_rng(0)
    drug, target = rng.normal(0, 1, 12), rng.normal(0, 1, 15)
    full = 6.0 + np.outer(drug, target)  # rank one around 6: additive drug / target offsets cannot fit it
    d, t = np.meshgrid(np.arange(12), np.arange(15), indexing="ij")
    hidden = (d + t) % 4 == 0  # a quarter of the cells held out
    drugs = ["C"] * 12
    table = DTITable(drugs, [f"T{i}" for i in range(15)], None, d[~hidden], t[~hidden], full[~hidden])
    from molecules.dti_baseline import matrix_completion

    est = matrix_completion(table, rank=1, iterations=30)
    add = additive_baseline(table, DTITable(drugs, table.targets, None, d[hidden], t[hidden], full[hidden]))
    assert np.abs(est[hidden] - full[hidden]).max() < 0.1 < np.abs(add - full[hidden]).max()


def test_table_hash_ignores_pair_order():
    a = _table([0, 1], [0, 1], [5.0, 6.0])
    b = _table([1, 0], [1, 0], [6.0, 5.0])
    assert table_sha256(a) == table_sha256(b) != table_sha256(_table([0, 1], [0, 1], [5.0, 6.5]))
