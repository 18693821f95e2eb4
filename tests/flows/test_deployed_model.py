"""The run's deployed-model step over a store: a spec run, its deployed diagnosis model saved and read back,
and the experiment report's calibration section."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from flows.experiments.calibration_section import calibration_section, calibration_table
from flows.experiments.runner import run_spec
from flows.stages.deployed_model import deploy_spec_model, deployed_lines
from fusion.calibration import expected_calibration_error, oof_log_probs
from fusion.deploy import load_deployed


@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    """A store with two embeddings (a: planted diagnosis signal, b: noise, 10 patients lack it) and a spec run."""
    store = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(5)
    n = 90
    pats = [f"TCGA-DM-{i:04d}" for i in range(n)]
    y = rng.permutation(np.arange(n) % 2)
    a = rng.normal(size=(n, 12))
    a[:, :3] += 1.5 * (2 * y[:, None] - 1)
    (store / "embeddings").mkdir()
    (store / "clinical").mkdir()
    pd.DataFrame(a, index=pats, columns=[f"a{j}" for j in range(12)]).to_parquet(store / "embeddings" / "a.parquet")
    pd.DataFrame(rng.normal(size=(n - 10, 6)), index=pats[10:], columns=[f"b{j}" for j in range(6)]).to_parquet(
        store / "embeddings" / "b.parquet")
    pd.DataFrame({"primary_diagnosis": np.where(y == 1, "LUSC", "LUAD")}, index=pats).to_parquet(
        store / "clinical" / "clinical.parquet")
    spec = {"name": "run-diagnosis", "store": str(store), "id": "patient_id", "modalities": {"a": "*", "b": "*"},
            "task": {"kind": "classification", "label": "primary_diagnosis"}, "folds": 3, "seed": 0,
            "strategies": ["late"], "options": {"epochs": 25, "n_components": 6, "robustness": False,
                                                "num_threads": 1, "lr": 0.003}}
    path = store / "experiments" / "run-diagnosis.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(spec))
    out = run_spec(path, store, mlflow=False)
    return store, path, out, pats, y


def test_deployed_diagnosis_model_saved_and_read_back(store_run):
    store, path, out, pats, y = store_run
    summary = deploy_spec_model(store, path, out)
    assert summary["task"] == "diagnosis" and summary["path"] == str(store / "models" / "diagnosis")
    top = max((r for r in out["results"] if r.strategy != "best"), key=lambda r: r.mean)
    assert summary["row"] == top.name  # no best row in this spec: the row with the highest mean (classical or not)
    assert summary["kind"] == ("classical" if top.strategy in ("baseline", "experts") else "neural")
    meta = json.loads((store / "models" / "diagnosis" / "model.json").read_text())
    assert meta["version"] == summary["version"] and meta["classes"] == ["LUAD", "LUSC"]
    assert meta["chosen_by"]["run_id"] == out["run"]["run_id"] and meta["code_version"] == out["run"]["code_version"]
    assert str(store / "embeddings" / "a.parquet") in meta["input_hashes"]
    assert meta["calibration"]["ece_before"] >= 0 and meta["n_train"] == 90
    dm = load_deployed(store, "diagnosis")
    frames = {m: pd.read_parquet(store / "embeddings" / f"{m}.parquet") for m in dm.modalities}
    inputs = {m: {p: row for p, row in zip(f.index, f.to_numpy())} for m, f in frames.items()}
    probs = dm.predict(dm.dataset(inputs))
    ds_pats = dm.dataset(inputs).patients
    assert roc_auc_score(y[[pats.index(p) for p in ds_pats]], probs[:, 1]) > 0.9
    assert deployed_lines({"diagnosis": summary})[0].startswith(f"deployed diagnosis model {dm.version}: {top.name}")
    assert summary["wall_s"] < 20
    assert "no model" in deploy_spec_model(store, path, {**out, "results": []})["skipped"]


def test_calibration_section_ece_by_row(store_run):
    store, _, out, _, _ = store_run
    data = out["data"]
    table = calibration_table(out["results"], data).set_index("model")
    row = next(r for r in out["results"] if r.name == "single:a")
    pats, _, logp = oof_log_probs(row.oof)
    assert table.loc["single:a", "ece_before"] == pytest.approx(
        expected_calibration_error(np.exp(logp), data.target.loc[pats, "label"].to_numpy()))
    assert set(table.index) >= {"single:a", "single:b", "fusion:late", "baseline:logistic"}
    html = calibration_section(out["results"], data)
    assert html.count("data:image/png;base64,") == 1 and "ece_before" in html and "single:a" in html


def test_slide_bag_model_with_the_runs_mil_encoder_round_trips(tmp_path):
    """The run's slide encoder (gated-attention MIL, flows.experiments.bags) is rebuilt by name on load."""
    from dataclasses import replace

    from flows.experiments.bags import mil_encoder_factories
    from fusion.deploy import fit_deployed, raw_inputs, save_deployed
    from fusion.experiment import ExperimentOptions, run_neural
    from tests.fusion.planted_bags import planted_bags, stratified_splits

    data = planted_bags(n=60, seed=0)
    opts = ExperimentOptions(epochs=40, lr=3e-3, n_components=6, robustness=False, num_threads=1,
                             strategies=("late",))
    opts = replace(opts, encoder_factories=mil_encoder_factories(data.bags, opts.embed_dim))
    row = run_neural(data, stratified_splits(data, k=2), opts, "late", ["expr", "wsi"], None)
    dm = fit_deployed(data, [row], opts)
    save_deployed(dm, tmp_path / "models" / "diagnosis")
    meta = json.loads((tmp_path / "models" / "diagnosis" / "model.json").read_text())
    assert meta["architecture"]["encoder_factories"]["wsi"]["target"] == "imaging.mil:GatedAttentionMIL"
    back = load_deployed(tmp_path, "diagnosis")
    ds = back.dataset(raw_inputs(data, ["expr", "wsi"]))
    assert ds.modalities["wsi"].is_ragged and int(ds.modalities["wsi"].present.sum()) == 56  # 4 lack a slide
    np.testing.assert_allclose(back.predict(ds), dm.predict(ds), atol=1e-6)
    assert ds.patients != data.patients  # first-seen order: the 4 patients with a slide only come last
    assert roc_auc_score(data.target.loc[ds.patients, "label"], back.predict(ds)[:, 1]) > 0.8


def test_calibration_section_survives_unreadable_predictions(store_run):
    _, _, out, _, _ = store_run
    row = next(r for r in out["results"] if r.name == "single:b")
    bad = type(row)(**{**row.__dict__, "name": "broken", "oof": row.oof.assign(prediction=np.nan)})
    table = calibration_table([bad, row], out["data"]).set_index("model")
    assert np.isnan(table.loc["broken", "ece_before"]) and np.isfinite(table.loc["single:b", "ece_before"])
    assert calibration_section([bad], out["data"]).count("no reliability diagram") == 1
