"""Deployed classical models (fusion.deploy_classical): a classical best choice is refit, calibrated on its
out-of-fold predictions, saved as plain arrays and read back; its exact modality Shapley values add up, with
an absent modality handled as the model itself handles it (baseline: training medians; experts: the expert's
training-mean score)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fusion.baseline_runs import baseline_matrix, run_baseline
from fusion.calibration import fit_temperature, oof_log_probs
from fusion.deploy import deploy_choice, fit_deployed, load_deployed, raw_inputs, save_deployed
from fusion.deploy_classical import DeployedClassical
from fusion.errors import FusionDataError
from fusion.experiment import ExperimentData, ExperimentOptions, ModelResult
from fusion.experts import run_experts
from fusion.metrics import c_index
from tests.fusion.experiment_tables import kfold_splits, planted_table

OPTS = ExperimentOptions(robustness=False, num_threads=1, strategies=("late",), experts_components=5)


def _with_gaps(data: ExperimentData) -> ExperimentData:
    """Patients 0-19 lack modality b, 20-29 lack a (NaN rows: absent)."""
    data.features["b"].iloc[:20] = np.nan
    data.features["a"].iloc[20:30] = np.nan
    return data


def _subset(data: ExperimentData, pats: list[str]) -> ExperimentData:
    return ExperimentData(patients=pats, features={m: f.loc[pats] for m, f in data.features.items()},
                          task=data.task, target=data.target.loc[pats], classes=data.classes)


def _best(row: ModelResult, k: int) -> ModelResult:
    return ModelResult("best", "best", row.modalities, None, row.metric, row.folds, row.fold_metrics, row.oof,
                       {"chosen": [row.name] * k})


def _assert_shapley_adds_up(dm, ds, rows) -> dict[str, list[float]]:
    """base + sum(values) == the prediction (calibrated P(predicted class) / risk) within 1e-6 for ``rows``;
    absent modalities get 0. Returns |phi| per modality."""
    out = dm.predict(ds)
    have = dm.presence(ds)
    phis = {m: [] for m in dm.modalities}
    for i in rows:
        sh = dm.shapley(ds, i)
        value = out[i].max() if dm.task == "diagnosis" else out[i]
        assert sh["probability"] == pytest.approx(value, abs=1e-9)
        assert sh["base_value"] + sum(sh["values"].values()) == pytest.approx(value, abs=1e-6)
        for j, m in enumerate(dm.modalities):
            if not have[i, j]:
                assert sh["values"][m] == 0.0
            phis[m].append(abs(sh["values"][m]))
    return phis


@pytest.fixture(scope="module")
def baseline_binary():
    full = _with_gaps(planted_table("classification", n=200, seed=3, n_classes=2))
    train = _subset(full, full.patients[:150])
    splits = kfold_splits(train, k=3)
    base = run_baseline(train, splits, OPTS, ["a", "b"])
    dm = fit_deployed(train, [base, _best(base, 3)], OPTS, run_id="run-c", code_version="abc")
    return full, train, base, dm


def test_a_classical_best_choice_is_deployed(baseline_binary):
    _, train, base, dm = baseline_binary
    assert isinstance(dm, DeployedClassical) and (dm.strategy, dm.modalities) == ("baseline", ["a", "b"])
    assert dm.chosen_by["row"] == "baseline:logistic" and "classical" in dm.chosen_by["reason"]
    assert dm.n_train == 150 and dm.info["reference_drift"] < 1e-6  # = logistic_fit_predict's own predictions
    pats, _, logp = oof_log_probs(base.oof)
    assert dm.temperature == pytest.approx(fit_temperature(logp, train.target.loc[pats, "label"].to_numpy()))
    # without a best row the row with the highest mean is deployed, classical or not
    rows = [{**base.row(), "extra": {}}, {"name": "single:a", "strategy": "single", "modalities": ["a"],
                                          "head": None, "metric": "auc", "mean": base.mean - 0.1, "folds": [0.5]}]
    assert deploy_choice(rows)[3]["row"] == "baseline:logistic"


def test_baseline_predicts_new_patients_and_its_shapley_values_add_up(baseline_binary):
    full, train, _, dm = baseline_binary
    new = full.patients[150:]
    ds = dm.dataset({m: {p: full.features[m].loc[p] for p in new if full.features[m].loc[p].notna().any()}
                     for m in ("a", "b")})
    probs = dm.predict(ds)
    assert probs.shape == (50, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert roc_auc_score(full.target.loc[ds.patients, "label"], probs[:, 1]) > 0.85
    phis = _assert_shapley_adds_up(dm, dm.dataset(raw_inputs(train, ["a", "b"])), range(0, 150, 5))
    assert np.mean(phis["a"]) > 2 * np.mean(phis["b"])  # the planted signal lives in a (b: 30 noise columns)
    # the empty coalition is a patient at the training medians of every column (the baseline's imputation)
    medians = np.nanmedian(baseline_matrix(train, ["a", "b"]), axis=0)
    at_median = dm.predict(dm.dataset({"a": {"M": medians[:30]}, "b": {"M": medians[30:]}}))[0]
    i = ds.patients.index(new[0])
    sh = dm.shapley(ds, i)
    assert sh["base_value"] == pytest.approx(at_median[sh["predicted"]], abs=1e-9)


def test_classical_save_load_round_trip(baseline_binary, tmp_path):
    full, _, _, dm = baseline_binary
    folder = save_deployed(dm, tmp_path / "models" / "diagnosis")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.npz"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["diagnosis"]  # no temp folder left
    meta = json.loads((folder / "model.json").read_text())
    assert meta["kind"] == "classical" and meta["version"] == dm.version and meta["parts"][0]["settings"]["C"] > 0
    back = load_deployed(tmp_path, "diagnosis")
    ds = back.dataset(raw_inputs(full, ["a", "b"]))
    np.testing.assert_allclose(back.predict(ds), dm.predict(ds), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.embed(ds), dm.embed(ds), rtol=0, atol=1e-12)
    assert back.shapley(ds, 3) == dm.shapley(ds, 3)
    (folder / "model.npz").write_bytes(b"not an npz")
    with pytest.raises(FusionDataError, match="model.npz"):
        load_deployed(tmp_path, "diagnosis")


def test_survival_experts_deployed_with_the_experts_own_missing_modality_handling(tmp_path):
    full = _with_gaps(planted_table("survival", n=160, seed=5, strength=2.5))
    train = _subset(full, full.patients[:120])
    experts = run_experts(train, kfold_splits(train, k=3), OPTS, ["a", "b"])
    dm = fit_deployed(train, [experts], OPTS)
    assert (dm.task, dm.strategy, dm.temperature) == ("survival", "experts", 1.0)
    assert dm.info["reference_drift"] < 1e-6  # = experts_fold's own combination for every patient
    kept = {p.name: p for p in dm.parts}
    assert "a" in kept  # the informative expert; b (noise) may be dropped at chance, then it contributes 0
    dm = load_deployed(save_deployed(dm, tmp_path / "models" / "survival").parents[1], "survival")
    new = full.patients[120:]
    ds = dm.dataset({m: {p: full.features[m].loc[p] for p in new if full.features[m].loc[p].notna().any()}
                     for m in ("a", "b")})
    risk = dm.predict(ds)
    t = full.target.loc[ds.patients]
    assert c_index(t["time"].to_numpy(), t["event"].to_numpy(bool), risk) > 0.7
    # by hand: the weighted sum over kept experts of (score - training mean) / sd, an absent expert at 0 (the
    # joint expert over a and b reads the patient's a, its b median-imputed)
    ds = dm.dataset(raw_inputs(train, ["a", "b"]))
    i = ds.patients.index(train.patients[5])  # lacks b
    rows = {p.name: np.concatenate([ds.x[m][i:i + 1] for m in p.modalities], axis=1) for p in dm.parts}
    z = [p.settings["weight"] * (float(p.scores(rows[p.name])[0, 0]) - float(p.mu)) / float(p.sd)
         if not np.isnan(rows[p.name]).all() else 0.0 for p in dm.parts]
    assert sum(p.settings["weight"] for p in dm.parts) == pytest.approx(1.0)
    assert np.isnan(ds.x["b"][i]).all() and dm.predict(ds)[i] == pytest.approx(sum(z), abs=1e-9)
    phis = _assert_shapley_adds_up(dm, ds, range(0, 120, 4))
    assert np.mean(phis["a"]) > np.mean(phis["b"])
    assert dm.shapley(ds, i)["base_value"] == pytest.approx(0.0, abs=1e-12)  # every expert at its training mean


def test_multiclass_experts_probabilities_and_shapley():
    data = _with_gaps(planted_table("classification", n=120, seed=4, n_classes=3))
    experts = run_experts(data, kfold_splits(data, k=2), OPTS, ["a", "b"])
    dm = fit_deployed(data, [experts], OPTS)
    assert dm.strategy == "experts" and dm.info["reference_drift"] < 1e-6
    ds = dm.dataset(raw_inputs(data, ["a", "b"]))
    probs = dm.predict(ds)
    assert probs.shape == (120, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert roc_auc_score(data.target.loc[ds.patients, "label"], probs, multi_class="ovr") > 0.8
    _assert_shapley_adds_up(dm, ds, range(0, 120, 10))
