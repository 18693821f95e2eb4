"""Activity model: planted drug-target signal recovered, CI by hand, splits, model files, CLI, Davis folder."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index as lifelines_c_index

from fusion.errors import MoleculeError
from molecules.activity import ActivityConfig, fit_activity, predict_table
from molecules.activity_io import load_activity_model, save_activity_model, score_compounds
from molecules.dti_data import read_davis, read_dti_table, split_mask
from molecules.dti_metrics import affinity_ci, dti_metrics
from tests.realdata import realdata_dir

RINGS = ["c1ccc(cc1){}", "c1cc(ncc1){}", "C1CCC(CC1){}", "c1ccc2cc(ccc2c1){}", "c1csc(c1){}", "C1CC(OC1){}"]
SUBSTITUENTS = ["C(=O)O", "S(N)(=O)=O", "OC", "Cl", "N", "C#N", "CC", "F"]
ACID, SULFONAMIDE = "C(=O)O", "S(N)(=O)=O"
FAST = ActivityConfig(hidden=32, dim=32, head_hidden=64, epochs=25, batch_size=64, lr=5e-3, dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sequence(rng: np.random.Generator, rich: str) -> str:
    """A random 120-residue sequence with a class-specific over-represented residue set."""
    alphabet = list("ACDEFGHIKLMNPQRSTVWY")
    p = np.array([4.0 if a in rich else 1.0 for a in alphabet])
    return "".join(rng.choice(alphabet, size=120, p=p / p.sum()))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """48 drugs x 12 targets: acids hit class-K targets, sulfonamides class-E targets (+3 pKd), else 5."""
    rng = np.random.default_rng(0)
    rows = []
    targets = [(f"KIN{i}", "K", _sequence(rng, "KR")) for i in range(6)] + \
              [(f"PRO{i}", "E", _sequence(rng, "ED")) for i in range(6)]
    for ring in RINGS:
        for sub in SUBSTITUENTS:
            smiles = ring.format(sub)
            for name, cls, seq in targets:
                hit = (sub == ACID and cls == "K") or (sub == SULFONAMIDE and cls == "E")
                rows.append({"smiles": smiles, "target": name, "sequence": seq,
                             "value": 5.0 + 3.0 * hit + rng.normal(0, 0.2)})
    path = tmp_path_factory.mktemp("dti") / "planted.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_affinity_ci_matches_hand_count_and_lifelines():
    y = [1.0, 2.0, 3.0, 3.0]
    p = [0.1, 0.3, 0.2, 0.2]
    # pairs with y_i > y_j: (2>1: 0.3>0.1 yes), (3>1: 0.2>0.1 yes) x2, (3>2: 0.2<0.3 no) x2 -> 3 / 5
    assert affinity_ci(y, p) == pytest.approx(3 / 5)
    assert affinity_ci([1, 2, 3], [5, 5, 5]) == pytest.approx(0.5)  # ties in p count one half
    assert np.isnan(affinity_ci([5.0, 5.0], [1.0, 2.0]))  # no pair with different affinities
    # DeepDTA's get_cindex as a double loop, and lifelines (which DTA papers also use), on Davis-like
    # affinities: most pairs at the pKd = 5 floor (tied, not comparable), the rest spread above
    rng = np.random.default_rng(1)
    y_rand = np.where(rng.random(300) < 0.6, 5.0, rng.normal(7.0, 1.0, 300))
    p_rand = np.round(y_rand + rng.normal(size=300), 1)  # rounded: ties in p too
    brute = [(1.0 if p_rand[i] > p_rand[j] else 0.5 if p_rand[i] == p_rand[j] else 0.0)
             for i in range(300) for j in range(300) if y_rand[i] > y_rand[j]]
    assert affinity_ci(y_rand, p_rand) == pytest.approx(np.mean(brute), abs=1e-12)
    assert affinity_ci(y_rand, p_rand) == pytest.approx(lifelines_c_index(y_rand, p_rand), abs=1e-12)
    assert dti_metrics(y_rand, p_rand)["ci"] == affinity_ci(y_rand, p_rand)


def test_splits_keep_drugs_targets_and_scaffolds_apart(planted):
    from molecules.dti_data import murcko_scaffold

    table = read_dti_table(planted)
    for split, key in (("cold-drug", table.drug_idx), ("cold-target", table.target_idx)):
        test = split_mask(table, split, 0.25, seed=3)
        assert 0.15 < test.mean() < 0.4
        assert not set(key[test]) & set(key[~test])
    test = split_mask(table, "scaffold", 0.25, seed=3)
    scaffolds = np.array([murcko_scaffold(s) for s in table.smiles])[table.drug_idx]
    assert test.any() and not set(scaffolds[test]) & set(scaffolds[~test])
    assert split_mask(table, "random", 0.25, seed=3).sum() == round(0.25 * len(table))
    with pytest.raises(MoleculeError, match="split"):
        split_mask(table, "temporal")


def test_planted_signal_beats_mean_on_held_out_pairs_and_unseen_drugs(planted):
    table = read_dti_table(planted)
    hit = table.value > 6.5  # the planted +3 pKd pairs (noise sd 0.2)
    for split in ("random", "cold-drug"):
        test = split_mask(table, split, 0.2, seed=0)
        assert hit[test].sum() >= 5
        model = fit_activity(table.subset(~test), FAST, device="cpu")
        pred = predict_table(model, table.subset(test))
        mean_mse = float(np.mean((table.value[test] - table.value[~test].mean()) ** 2))
        metrics = dti_metrics(table.value[test], pred)
        assert metrics["mse"] < 0.3 * mean_mse, (split, metrics, mean_mse)
        assert metrics["pearson"] > 0.85, (split, metrics)
        # hits are ranked above non-hits (CI over the hit / non-hit pairs only)
        assert affinity_ci(hit[test].astype(float), pred) > 0.95, (split, metrics)


def test_model_file_version_and_score_compounds(planted, tmp_path):
    table = read_dti_table(planted)
    model = fit_activity(table, FAST, device="cpu")
    path = tmp_path / "model.pt"
    version = save_activity_model(model, path)
    assert len(version) == 12 and load_activity_model(path).version == version
    acid_new, plain_new = "c1ccc(cc1)CC(=O)O", "c1ccc(cc1)CC"
    df = score_compounds(path, [acid_new, "not-a-smiles", plain_new], ["KIN0", "PRO0"])
    assert df.attrs["skipped"] == ["not-a-smiles"] and len(df) == 4
    assert set(df["model_version"]) == {version}
    score = df.set_index(["smiles", "target"])["predicted"]
    assert score[(acid_new, "KIN0")] > score[(plain_new, "KIN0")] + 1.0  # the acid motif is recognised
    assert np.allclose(predict_table(model, table), predict_table(load_activity_model(path), table), atol=1e-5)
    # a new target needs its sequence (k-mer encoder); with one it is scored
    with pytest.raises(MoleculeError, match="NEWK"):
        score_compounds(path, [acid_new], ["NEWK"])
    seq = read_dti_table(planted).sequences[0]
    assert len(score_compounds(path, [acid_new], ["NEWK"], {"NEWK": seq})) == 1
    path.write_bytes(b"garbage")
    with pytest.raises(MoleculeError, match="model.pt"):
        load_activity_model(path)


def test_cli_evaluate_json_uses_split_column(planted, tmp_path, capsys):
    from flows.cli import main

    df = pd.read_csv(planted)
    df["split"] = np.where(np.arange(len(df)) % 5 == 0, "test", "train")
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    assert main(["activity", "evaluate", "--table", str(path), "--epochs", "3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "given" and out["n_test"] == (df["split"] == "test").sum()
    assert {"ci", "mse", "pearson", "n_train"} <= set(out)
    # the split-conformal interval: nominal 0.9 by default, its coverage measured on the test pairs
    assert out["nominal"] == 0.9 and out["n_calibration"] == round(0.1 * (df["split"] == "train").sum())
    assert out["n_train"] + out["n_calibration"] == (df["split"] == "train").sum()
    assert abs(out["coverage"] - 0.9) < 0.15 and out["interval_halfwidth"] > 0
    df.drop(columns="value").to_csv(path, index=False)
    assert main(["activity", "evaluate", "--table", str(path)]) == 2
    assert "missing column(s) ['value']" in capsys.readouterr().err


def test_davis_folder_shapes_and_folds():
    table = read_davis(realdata_dir() / "dti" / "davis")
    assert (len(table.smiles), len(table.targets)) == (68, 442)
    assert len(table) == 68 * 442  # Davis has no missing cells; every pair is in one fold
    assert (table.split == "test").sum() == 5010 and (table.split == "train").sum() == 25046
    assert table.value.min() == pytest.approx(5.0) and table.value.max() > 10.0  # 10 uM floor -> pKd 5
    assert len(table.sequences[0]) > 100


def test_cli_train_then_predict_records_the_model_version(planted, tmp_path, capsys):
    from flows.cli import main

    model = tmp_path / "m.pt"
    assert main(["activity", "train", "--table", str(planted), "--out", str(model), "--epochs", "2"]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    queries = pd.read_csv(planted).head(30)
    out = tmp_path / "pred.csv"
    assert main(["activity", "predict", "--model", str(model), "--table", str(planted), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == len(pd.read_csv(planted)) and set(pred["model_version"]) == {version}
    assert set(zip(queries["smiles"], queries["target"])) <= set(zip(pred["smiles"], pred["target"]))
    assert main(["activity", "predict", "--model", str(planted), "--table", str(planted)]) == 2
    assert "planted.csv: not a readable activity model file" in capsys.readouterr().err


def test_kd_and_ic50_are_separate_tasks_never_pooled(tmp_path, capsys):
    """Same pairs measured as Kd and as IC50 (IC50 = Kd value - 2 here): each type keeps its own values."""
    from flows.cli import main

    rng = np.random.default_rng(1)
    rows = []
    for ring in RINGS:
        for sub in SUBSTITUENTS:
            for t in ("T1", "T2"):
                kd = 5.0 + 3.0 * (sub == ACID) + rng.normal(0, 0.1)
                rows += [{"smiles": ring.format(sub), "target": t, "activity_type": "Kd", "value": kd},
                         {"smiles": ring.format(sub), "target": t, "activity_type": "IC50", "value": kd - 2.0}]
    path = tmp_path / "typed.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    both = read_dti_table(path)
    assert both.activity_types == ("IC50", "Kd") and both.targets == ["T1|IC50", "T1|Kd", "T2|IC50", "T2|Kd"]
    model = fit_activity(both, dataclasses.replace(FAST, target_parts=("embedding",)), device="cpu")
    assert model.activity_types == ("IC50", "Kd")
    pred = pd.Series(predict_table(model, both)).groupby(np.array(both.targets)[both.target_idx]).mean()
    truth = pd.Series(both.value).groupby(np.array(both.targets)[both.target_idx]).mean()
    # a pooled model would put both types near their common mean (Kd - 1); here each is within 0.3 of its own
    assert (pred - truth).abs().max() < 0.3 and pred["T1|Kd"] - pred["T1|IC50"] > 1.5
    kd_only = read_dti_table(path, activity_type="kd")
    assert kd_only.activity_types == ("Kd",) and kd_only.targets == ["T1", "T2"] and len(kd_only) == len(rows) // 2
    with pytest.raises(MoleculeError, match="no 'Ki' rows"):
        read_dti_table(path, activity_type="Ki")
    out = tmp_path / "m.pt"
    assert main(["activity", "train", "--table", str(path), "--activity-type", "Kd", "--out", str(out),
                 "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["activity_types"] == ["Kd"]
    scored = score_compounds(out, [RINGS[0].format(ACID)], ["T1"])
    assert scored["activity_type"].tolist() == ["Kd"] and load_activity_model(out).activity_types == ("Kd",)
    assert (scored["lower"] < scored["predicted"]).all() and (scored["predicted"] < scored["upper"]).all()


def test_grad_clip_bounds_every_step(planted):
    """A clip far below the gradient norm leaves AdamW's steps eps-dominated: the weights barely move."""
    table = read_dti_table(planted)
    table = table.subset(np.arange(len(table)) < 64)
    tiny = dataclasses.replace(FAST, epochs=2, batch_size=16, weight_decay=0.0, id_dropout=0.0)
    start = fit_activity(table, dataclasses.replace(tiny, lr=0.0), "cpu").state_dict()  # the initial weights
    moved = {}
    for clip in (0.0, 1e-12):
        state = fit_activity(table, dataclasses.replace(tiny, grad_clip=clip), "cpu").state_dict()
        moved[clip] = max(float((state[k].float() - start[k].float()).abs().max()) for k in start)
    assert moved[1e-12] < 0.01 * moved[0.0]
