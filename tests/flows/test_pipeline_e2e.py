"""End to end: generated cohort -> Prefect pipeline -> fusion -> ranking -> results DB -> queries."""

from __future__ import annotations

import json

import duckdb
import pytest
from rdkit import Chem

from flows.cli import main


def _cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_bad_dicom_and_bad_slide_are_reported_and_skipped(e2e_run):
    skipped = e2e_run["summary"]["skipped"]
    text = json.dumps(skipped)
    assert e2e_run["bad_ct_file"].name in text and e2e_run["bad_ct_patient"] in text
    assert e2e_run["bad_slide"].name in text
    counts = e2e_run["summary"]["metrics"]["modality_counts"]
    truth = e2e_run["truth"]
    n = truth["config"]["n_patients"]
    assert counts["ct"] == n - 1  # every CT but the broken one
    assert counts["wsi"] == len(truth["modalities_present"]["wsi"]) - 1


def test_planted_targets_reach_the_top(e2e_run, capsys):
    targets = e2e_run["truth"]["targets"]
    rows = _cli_json(capsys, "targets", "--store", str(e2e_run["store"]), "--top", str(len(targets)),
                     "--format", "json")
    assert sorted(r["gene"] for r in rows) == sorted(targets)
    assert [r["rank"] for r in rows] == list(range(1, len(targets) + 1))
    for r in rows:
        assert {"rna_expression", "survival_association", "copy_number", "spatial_tumour_region",
                "somatic_mutation", "model_attribution"} == set(r["evidence"])
        assert r["evidence"]["rna_expression"] > 0.5 and r["evidence"]["copy_number"] > 0.5
        assert r["compounds"], f"no compound linked to {r['gene']}"
        for c in r["compounds"]:
            assert Chem.MolToSmiles(Chem.MolFromSmiles(c["canonical_smiles"])) == c["canonical_smiles"]
        # some planted targets get only moderately potent compounds (pChEMBL 6-7); all have an active one
        assert max(c["pchembl"] for c in r["compounds"]) >= 6.0


def test_fusion_beats_every_single_modality(e2e_run, capsys):
    rows = _cli_json(capsys, "experiments", "--store", str(e2e_run["store"]), "--format", "json")
    rows = [r for r in rows if r["task"].startswith("diagnosis")]
    fusion = {r["strategy"]: r["mean"] for r in rows if r["kind"] == "fusion"}
    single = {r["modalities"]: r["mean"] for r in rows if r["kind"] == "single"}
    assert set(fusion) == {"early", "late", "attention", "kronecker"}
    assert {"ct", "pet", "wsi", "expression"} <= set(single)
    best_single = max(single.values())
    assert all(r["metric"] == "auc" for r in rows)
    # the best fused model beats the best single modality, and so do most strategies on their own
    assert max(fusion.values()) > best_single, (fusion, single)
    assert sum(v > best_single for v in fusion.values()) >= 3, (fusion, single)
    # every fused strategy clearly beats the average single modality
    mean_single = sum(single.values()) / len(single)
    assert min(fusion.values()) > mean_single + 0.1, (fusion, single)


def test_run_is_recorded_with_input_hashes_and_config(e2e_run):
    con = duckdb.connect(str(e2e_run["store"] / "results.duckdb"), read_only=True)
    run_id, inputs, config, metrics = con.execute(
        "SELECT run_id, inputs_sha256_json, config_json, metrics_json FROM runs").fetchone()
    con.close()
    assert run_id == e2e_run["summary"]["run_id"]
    inputs = json.loads(inputs)
    assert set(inputs) == {"ct", "pet", "wsi", "spatial", "expression", "mutations", "copy_number",
                           "clinical", "compounds"}
    assert all(len(h) == 64 for h in inputs.values())
    assert json.loads(config)["cv_repeats"] == 3
    assert "fusion:attention" in json.loads(metrics)["experiments"]["diagnosis (binary)"]
    manifest = (e2e_run["store"] / "manifest.parquet")
    assert manifest.exists()


def test_survival_experiments_use_the_c_index(e2e_run, capsys):
    rows = _cli_json(capsys, "experiments", "--store", str(e2e_run["store"]), "--format", "json")
    surv = [r for r in rows if r["task"] == "overall survival (cox)"]
    assert {r["strategy"] for r in surv if r["kind"] == "fusion"} == {"early", "late", "attention", "kronecker"}
    assert all(r["metric"] == "c_index" for r in surv)
    # the planted hazard follows the targets' expression: expression-based models rank risk above chance
    by_name = {r["name"]: r["mean"] for r in surv}
    assert by_name["single:expression"] > 0.6
    assert max(r["mean"] for r in surv if r["kind"] == "fusion") > 0.55
