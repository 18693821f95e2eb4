"""Experiment specs: clear errors naming the key; the CLI records JSON rows, the results DB, MLflow and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.experiments.inputs import load_experiment
from flows.experiments.spec import load_spec
from fusion.errors import SpecError

BASE = {"name": "toy", "table": "table.csv", "id": "case_id", "modalities": {"rna": "*_rna", "cnv": "*_cnv"},
        "task": {"kind": "classification", "label": "subtype"}, "folds": 3, "strategies": ["late"],
        "options": {"epochs": 30, "n_components": 4, "lr": 0.003}}


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    """A 60-patient table (two rows for patient P000, as MCAT's one row per slide) with a planted subtype."""
    rng = np.random.default_rng(0)
    n = 60
    y = np.repeat(["A", "B", "C"], n // 3)
    rna = rng.normal(size=(n, 6)) + (pd.Series(y).map({"A": 0, "B": 1.5, "C": 3}).to_numpy()[:, None])
    df = pd.DataFrame(rna, columns=[f"G{j}_rna" for j in range(6)])
    for j in range(4):
        df[f"G{j}_cnv"] = rng.integers(-1, 2, size=n)
    df.insert(0, "subtype", y)
    df.insert(0, "case_id", [f"P{i:03d}" for i in range(n)])
    df = pd.concat([df.iloc[:1], df], ignore_index=True)
    df.to_csv(tmp_path / "table.csv", index=False)
    return tmp_path


def _write(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("change,key", [
    ({"modalitys": {}}, "modalitys"),
    ({"task": {"kind": "classification", "label": "subtype", "labl": 1}}, "task.labl"),
    ({"modalities": {"rna": "*_rna", "cnv": "*_copy"}}, "modalities.cnv"),
    ({"task": {"kind": "classify", "label": "subtype"}}, "task.kind"),
    ({"strategies": ["late", "fancy"]}, "strategies"),
    ({"options": {"epoch": 3}}, "options.epoch"),
])
def test_spec_errors_name_the_key(toy, change, key):
    spec = _write(toy, {**BASE, **change})
    with pytest.raises(SpecError, match=rf"spec.yaml: key '{key}'"):
        load_experiment(load_spec(spec))


def test_split_ids_absent_from_the_table(toy):
    (toy / "splits").mkdir()
    ids = [f"P{i:03d}" for i in range(60)]
    pd.DataFrame({"train": ids[:40] + [None] * 0, "val": ids[40:] + ["TCGA-XX-0000"] + [None] * 19}).to_csv(
        toy / "splits" / "splits_0.csv")
    spec = {k: v for k, v in BASE.items() if k != "folds"}
    with pytest.raises(SpecError, match=r"key 'splits'.*1 id\(s\) absent from the table.*TCGA-XX-0000"):
        load_experiment(load_spec(_write(toy, {**spec, "splits": "splits"})))


def test_class_with_one_member(toy):
    df = pd.read_csv(toy / "table.csv")
    df.loc[df.index[-1], "subtype"] = "D"
    df.to_csv(toy / "table.csv", index=False)
    with pytest.raises(SpecError, match=r"key 'task.label': class 'D' has 1 member"):
        load_experiment(load_spec(_write(toy, BASE)))


def test_cli_json_rows_results_db_mlflow_and_report(toy, capsys):
    from flows.cli import main
    from flows.results.db import query_experiment_results

    store = toy / "store"
    rc = main(["experiment", str(_write(toy, BASE)), "--store", str(store), "--format", "json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names == ["baseline:logistic", "single:rna", "single:cnv", "fusion:late"]
    for r in rows:
        assert r["metric"] == "auc" and len(r["folds"]) == 3
        assert r["mean"] == pytest.approx(np.mean(r["folds"])) and r["std"] == pytest.approx(np.std(r["folds"]))
    assert {r["strategy"] for r in rows} == {"baseline", "single", "late"}
    by = {r["name"]: r for r in rows}
    assert by["single:rna"]["mean"] > 0.8 and by["baseline:logistic"]["mean"] > 0.8  # planted subtype in rna
    db = query_experiment_results(store)
    assert sorted(r["model"] for r in db) == sorted(names) and {r["experiment"] for r in db} == {"toy"}
    html = next((store / "reports").glob("*.html")).read_text()
    assert html.count("data:image/png;base64,") >= 3 and "fusion:late" in html
    assert list((store / "mlruns").glob("*/*/meta.yaml")), "no MLflow run logged under STORE/mlruns"


def test_store_inputs_embeddings_and_clinical(tmp_path):
    """`store:` specs read STORE/embeddings/<modality>.parquet and STORE/clinical/clinical.parquet."""
    rng = np.random.default_rng(1)
    pats = [f"TCGA-AA-{i:04d}" for i in range(30)]
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "clinical").mkdir()
    pd.DataFrame(rng.normal(size=(30, 4)), index=pats, columns=[f"e{j}" for j in range(4)]).to_parquet(
        tmp_path / "embeddings" / "expression.parquet")
    pd.DataFrame(rng.normal(size=(20, 3)), index=pats[:20], columns=["suv_max", "mtv_ml", "x"]).to_parquet(
        tmp_path / "embeddings" / "pet.parquet")
    pd.DataFrame({"primary_diagnosis": ["LUAD", "LUSC", "Other"] * 10}, index=pats).to_parquet(
        tmp_path / "clinical" / "clinical.parquet")
    spec = {"name": "store-diag", "store": str(tmp_path), "id": "patient_id",
            "modalities": {"expression": "*", "pet": "*_m*"}, "task": {"kind": "classification",
                                                                      "label": "primary_diagnosis"}, "folds": 3}
    data, splits, hashes = load_experiment(load_spec(_write(tmp_path, spec)))
    assert data.classes == ["LUAD", "LUSC", "Other"] and len(data.patients) == 30
    assert list(data.features["pet"].columns) == ["suv_max", "mtv_ml"]
    assert data.features["pet"].loc[pats[25]].isna().all()  # absent modality, masked (not imputed)
    assert len(splits) == 3 and sorted(p for _, va in splits for p in va) == sorted(pats)
    assert len(hashes) == 3
    with pytest.raises(SpecError, match=r"key 'modalities.ct': the store has no embeddings/ct.parquet"):
        load_experiment(load_spec(_write(tmp_path, {**spec, "modalities": {"ct": "*"}})))
