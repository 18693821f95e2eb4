"""Cold-drug properties of the profile model: grouped out-of-fold rows see no profile of their own drug, a held-out
drug's features come from the training pairs alone, and chemistry carries a planted family signal to new drugs."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.errors import MoleculeError
from molecules.dti_data import DTITable
from molecules.dti_metrics import mse
from molecules.dti_profile import ALL_NAMES, ProfileGBT, out_of_fold, pair_groups
from molecules.model_card import additive_baseline

COL = {name: i for i, name in enumerate(ALL_NAMES)}
# three chemical families (alkyl benzenes, primary amines, cyclohexyl acids): similar within, unlike across
FAMILIES = (["Cc1ccccc1", "CCc1ccccc1", "CCCc1ccccc1", "CCCCc1ccccc1", "CCCCCc1ccccc1"],
            ["CCCCN", "CCCCCN", "CCCCCCN", "CCCCCCCN", "CCCCCCCCN"],
            ["OC(=O)C1CCCCC1", "OC(=O)CC1CCCCC1", "OC(=O)CCC1CCCCC1", "OC(=O)CCCC1CCCCC1", "OC(=O)CCCCC1CCCCC1"])


def _family_table(seed: int = 0, n_targets: int = 16) -> tuple[DTITable, np.ndarray]:
    """Every drug x target pair; value = 6 + its family's pattern over the targets + noise (sd 0.1)."""
    rng = np.random.default_rng(seed)
    smiles = [s for fam in FAMILIES for s in fam]
    family = np.repeat(np.arange(len(FAMILIES)), [len(f) for f in FAMILIES])
    pattern = rng.normal(0, 1.0, (len(FAMILIES), n_targets))
    values = 6.0 + pattern[family] + rng.normal(0, 0.1, (len(smiles), n_targets))
    d, t = np.nonzero(np.ones_like(values, dtype=bool))
    return DTITable(smiles, [f"T{j}" for j in range(n_targets)], None, d, t, values[d, t]), family


def test_grouped_out_of_fold_rows_carry_no_measurement_of_their_own_drug():
    table, _ = _family_table()
    feats = out_of_fold(table, folds=5, seed=0, groups=pair_groups(table, "drug"))
    assert not feats[:, COL["drug_seen"]].any()  # every training pair looks like a new drug's pair
    assert np.isnan(feats[:, COL["drug_profile_k3_mean"]]).all()
    drug = table.drug_idx == 4
    moved = DTITable(table.smiles, table.targets, None, table.drug_idx, table.target_idx,
                     np.where(drug, table.value + 3.0, table.value))
    again = out_of_fold(moved, folds=5, seed=0, groups=pair_groups(moved, "drug"))
    assert np.array_equal(again[drug], feats[drug], equal_nan=True)  # none of drug 4's values in its rows
    assert not np.array_equal(again[~drug], feats[~drug], equal_nan=True)  # ... they are in other drugs' rows
    # random folds (the warm model) do see the drug's other pairs: the property is the grouping's, not luck
    warm = out_of_fold(table, folds=5, seed=0)
    warm_moved = out_of_fold(moved, folds=5, seed=0)
    assert not np.array_equal(warm[drug], warm_moved[drug], equal_nan=True)


def test_a_held_out_drug_is_predicted_from_the_training_pairs_alone():
    table, _ = _family_table()
    test = table.drug_idx == 7
    model = ProfileGBT(seed=0, max_iter=60, learning_rate=0.1, group_by="drug", chemistry=True)
    model.fit(table.subset(~test))
    held = table.subset(test)
    feats, pred = model.features.transform(held), model.predict(held)
    scrambled = DTITable(held.smiles, held.targets, None, held.drug_idx, held.target_idx,
                         np.random.default_rng(1).permutation(held.value) + 2.0)
    assert np.array_equal(model.features.transform(scrambled), feats, equal_nan=True)  # its own values unused
    one = held.subset(np.arange(len(held)) == 5)  # alone, without the drug's other test pairs
    assert np.array_equal(model.features.transform(one)[0], feats[5], equal_nan=True)
    assert model.predict(one)[0] == pytest.approx(pred[5])
    assert not feats[:, COL["drug_seen"]].any() and (feats[:, COL["drug_nearest_tanimoto"]] > 0.3).all()


def test_chemistry_carries_a_family_pattern_to_new_drugs():
    table, family = _family_table(seed=3)
    test = np.isin(table.drug_idx, [2, 7, 12])  # one new member of each family
    train_t, test_t = table.subset(~test), table.subset(test)
    pred = ProfileGBT(seed=0, max_iter=150, learning_rate=0.1, group_by="drug", chemistry=True).fit(
        train_t).predict(test_t)
    add = mse(test_t.value, additive_baseline(train_t, test_t))
    assert add > 0.5  # target means average the families' patterns away
    assert mse(test_t.value, pred) < 0.2 * add


def test_scaffold_groups_are_the_families_and_a_bad_grouping_is_named():
    table, family = _family_table()
    groups = pair_groups(table, "scaffold")  # benzene, acyclic, cyclohexane: one scaffold per family
    pairs = set(zip(groups.tolist(), family[table.drug_idx].tolist()))
    assert len(pairs) == len(FAMILIES) == len(set(groups.tolist()))
    with pytest.raises(MoleculeError, match="group_by expected one of .* found 'target'"):
        ProfileGBT(group_by="target")


def test_fixed_ensemble_weights_are_used_as_given_and_score_every_calibration_pair():
    from bench.davis_bench import FIXED_WEIGHTS, _ensemble

    rng = np.random.default_rng(0)
    y_cal, y_test = rng.normal(6, 1, 40), rng.normal(6, 1, 30)
    good = {"cal": y_cal + rng.normal(0, 0.1, 40), "test": y_test + rng.normal(0, 0.1, 30)}
    bad = {"cal": rng.normal(6, 1, 40), "test": rng.normal(6, 1, 30)}
    cal_pred = {"profile": good["cal"], "gbt": bad["cal"], "additive": np.full(40, 6.0)}
    test_pred = {"profile": good["test"], "gbt": bad["test"], "additive": np.full(30, 6.0)}
    fixed = {"gbt": 0.1, "profile": 0.5, "additive": 0.4}
    w, score, cal_mix, test_mix = _ensemble(cal_pred, test_pred, y_cal, 3, ("gnn", "gbt", "profile", "additive"),
                                            fixed)
    assert w == fixed and score.all()  # no GNN fitted: the fixed members are the members present
    assert np.allclose(test_mix, 0.1 * bad["test"] + 0.5 * good["test"] + 2.4)
    assert np.allclose(cal_mix, 0.1 * bad["cal"] + 0.5 * good["cal"] + 2.4)
    # a GNN member present: the fixed weights do not cover it, so the calibration half chooses (the good member)
    cal_pred["gnn"], test_pred["gnn"] = bad["cal"] + 1.0, bad["test"] + 1.0
    w, score, _, test_mix = _ensemble(cal_pred, test_pred, y_cal, 3, ("gnn", "gbt", "profile", "additive"), fixed)
    assert w["profile"] == 1.0 and score.sum() == 20 and np.allclose(test_mix, good["test"])
    assert set(FIXED_WEIGHTS) == {"cold-drug", "scaffold"}
    assert all(abs(sum(v.values()) - 1.0) < 1e-9 for v in FIXED_WEIGHTS.values())
    with pytest.raises(MoleculeError, match="multiples of 0.1"):
        _ensemble(cal_pred, test_pred, y_cal, 3, ("gbt", "profile", "additive"),
                  {"gbt": 0.15, "profile": 0.45, "additive": 0.4})
