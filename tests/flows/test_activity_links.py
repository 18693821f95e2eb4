"""Predicted compound links: an activity model trained on a library's measured activities transfers a
target family's chemistry to a family member measured only on inactive compounds; measured pairs and
targets that already have a potent measured compound get no prediction. Each predicted link carries its
activity type, a conformal interval and its applicability domain; the model card goes into the results DB
and comes back through the queries the CLI and the API share."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from flows.results.db import write_run
from flows.results.queries import explain_target, ranked_targets
from flows.stages.activity_links import activity_task_table, predicted_links, targets_needing_predictions
from molecules.domain import tanimoto_packed_matrix
from molecules.io import standardise_smiles
from molecules.similarity import packed_fingerprints

ACIDS = ["OC(=O)c1ccccc1", "OC(=O)c1ccc(C)cc1", "OC(=O)c1ccc(Cl)cc1", "OC(=O)c1ccc(O)cc1", "OC(=O)CCc1ccccc1",
         "OC(=O)c1cccc(F)c1", "OC(=O)c1ccncc1", "OC(=O)Cc1ccccc1"]
AMINES = ["NCCc1ccccc1", "CN(C)CCc1ccccc1", "NCc1ccc(Cl)cc1", "NCCCc1ccccc1", "c1ccc(cc1)C1CCNCC1", "NCc1ccccc1",
          "CNCCc1ccccc1", "NCCc1ccc(F)cc1"]
NEUTRAL = ["Cc1ccccc1", "Clc1ccccc1", "COc1ccccc1", "Cc1ccc(C)cc1", "CCOc1ccccc1", "Fc1ccccc1", "CCc1ccccc1",
           "c1ccc2ccccc2c1"]


def _library():
    kind = ["acid"] * 8 + ["amine"] * 8 + ["neutral"] * 8
    comp = pd.DataFrame({"compound_id": [f"C{i:02d}" for i in range(24)],
                         "canonical_smiles": [standardise_smiles(s) for s in ACIDS + AMINES + NEUTRAL]})
    rows = [(t, cid, 8.0 if k == family else 4.5)
            for t, family in [("A1", "acid"), ("A2", "acid"), ("A3", "acid"), ("B1", "amine"), ("B2", "amine"),
                              ("B3", "amine")]
            for cid, k in zip(comp["compound_id"], kind)]
    rows += [("A4", cid, 4.5) for cid, k in zip(comp["compound_id"], kind) if k != "acid"]  # acids never tested
    return comp, pd.DataFrame(rows, columns=["target_gene", "compound_id", "pchembl"]), dict(zip(comp["compound_id"], kind))


@pytest.fixture(scope="module")
def predicted():
    comp, links, kind = _library()
    need = targets_needing_predictions(links, ["A4", "B1", "A1", "NOVEL"], top_n=4, active=6.0)
    assert need == ["A4"]  # B1 and A1 have potent measured compounds; NOVEL has no measurements at all
    return comp, links, kind, predicted_links(comp, links, need, active=6.0, per_target=8, steps=300, seed=0)


def test_family_member_without_potent_measurements_gets_the_familys_chemistry_predicted(predicted):
    comp, links, kind, pred = predicted
    assert len(pred) >= 6 and set(pred["target_gene"]) == {"A4"}
    assert {kind[c] for c in pred["compound_id"]} == {"acid"}  # only the untested acids, never a measured pair
    assert (pred["pchembl"] >= 6.0).all() and (pred["link_type"] == "predicted").all()
    version = pred["model_version"].iloc[0]
    assert len(version) == 12 and (pred["model_version"] == version).all()
    assert pred["source"].str.endswith(version).all()


def test_links_carry_interval_and_domain_measured_by_hand(predicted):
    comp, links, kind, pred = predicted
    card = pred.attrs["model_card"]
    q = card["interval"]["halfwidth"]
    assert np.allclose(pred["pchembl_upper"] - pred["pchembl"], q) and np.allclose(pred["pchembl"] - pred["pchembl_lower"], q)
    assert (pred["interval_nominal"] == 0.9).all() and (pred["activity_type"] == "pChEMBL").all()
    smiles = dict(zip(comp["compound_id"], comp["canonical_smiles"]))
    # A4 was measured only on amines and neutrals; the model's training pairs are the non-calibration ones
    table = activity_task_table(comp, links)
    from molecules.conformal import calibration_mask

    train = table.subset(~calibration_mask(len(table), 0.1, 0))
    a4 = sorted({train.smiles[d] for d, t in zip(train.drug_idx, train.target_idx) if table.targets[t] == "A4|pChEMBL"})
    row = pred.iloc[0]
    by_hand = tanimoto_packed_matrix(packed_fingerprints([smiles[row["compound_id"]]]), packed_fingerprints(a4)).max()
    assert row["nn_tanimoto_target"] == pytest.approx(by_hand)
    assert (pred["nn_tanimoto_any"] == 1.0).all()  # every predicted acid was measured on A1-A3
    assert (pred["in_domain"] == (pred["nn_tanimoto_target"] >= 0.4)).all()


def test_model_card_records_data_splits_and_held_out_figures(predicted):
    comp, links, kind, pred = predicted
    card = pred.attrs["model_card"]
    data = card["training_data"]
    assert (data["rows"], data["targets"], data["compounds"]) == (len(links), 7, 24)
    assert data["rows_per_activity_type"] == {"pChEMBL": len(links)} and len(data["sha256"]) == 64
    assert card["model_version"] == pred["model_version"].iloc[0] and card["splits"]["calibration"]["n"] == 16
    for split in ("random", "cold-drug"):
        m = card["metrics"][split]
        assert m["n_train"] + m["n_test"] == len(links)
        # the planted family signal: the model ranks held-out pairs far better than drug + target means
        assert m["model"]["ci"] > m["baseline_drug_target_mean"]["ci"] + 0.1
    assert abs(card["metrics"]["random"]["coverage"] - 0.9) < 0.15


def test_kd_and_ic50_links_are_modelled_as_separate_tasks():
    comp, links, _ = _library()
    typed = pd.concat([links.assign(activity_type="IC50"),
                       links.assign(activity_type="Kd", pchembl=links["pchembl"] + 1.0)], ignore_index=True)
    table = activity_task_table(comp, typed)
    assert table.activity_types == ("IC50", "Kd") and "A1|IC50" in table.targets and "A1|Kd" in table.targets
    values = pd.Series(table.value).groupby(np.array(table.targets)[table.target_idx]).max()
    assert values["A1|Kd"] == pytest.approx(9.0) and values["A1|IC50"] == pytest.approx(8.0)  # never averaged


def _db(tmp_path, comp, pred, measured):
    from flows.results.ranking import load_scoring_config

    scoring = load_scoring_config()
    ranked = pd.DataFrame({"gene": ["A4", "A1"], "rank": [1, 2], "score": [0.9, 0.5], "tractability": [0.5, 0.9]})
    compounds = comp.assign(name=None, inchikey="", properties_json="{}", morgan_fp=None)
    run = {"run_id": "r1", "cohort": "t", "started_utc": "2026-01-01T00:00:00", "finished_utc": "2026-01-01T00:01:00",
           "catalog": "c.yaml", "config": {}, "inputs_sha256": {}, "metrics": {}}
    exp = pd.DataFrame(columns=["name", "kind", "strategy", "modalities", "task", "metric", "mean", "std", "n_folds"])
    links = pd.concat([measured.assign(link_type="measured", model_version="", source="lib"), pred], ignore_index=True)
    write_run(tmp_path, run=run, targets=ranked, compounds=compounds, links=links, experiments=exp,
              scoring=scoring.to_dict(), model_cards=[pred.attrs["model_card"]])


def test_interval_domain_and_card_reach_the_queries(predicted, tmp_path):
    comp, links, kind, pred = predicted
    measured = links.loc[links["target_gene"] == "A1"].assign(activity_type="IC50", target_ensembl_id="ENSG0001",
                                                              target_hgnc_id="HGNC:1")
    _db(tmp_path, comp, pred, measured)
    t = explain_target(tmp_path, "A4")
    c = t["compounds"][0]
    top = pred.iloc[0]
    assert c["link"] == "predicted" and c["id"] == top["compound_id"]
    assert c["interval"] == {"lower": pytest.approx(top["pchembl_lower"]), "upper": pytest.approx(top["pchembl_upper"]),
                             "nominal": 0.9}
    assert c["domain"]["nn_tanimoto_target"] == pytest.approx(top["nn_tanimoto_target"])
    assert c["domain"]["in_domain"] == bool(top["in_domain"]) and c["domain"]["threshold"] == 0.4
    assert t["activity_models"][top["model_version"]]["training_data"]["sha256"] == \
        pred.attrs["model_card"]["training_data"]["sha256"]
    a1 = explain_target(tmp_path, "A1")
    assert a1["ids"] == {"hgnc_symbol": "A1", "hgnc_id": "HGNC:1", "ensembl_id": "ENSG0001"}
    assert "interval" not in a1["compounds"][0] and a1["compounds"][0]["activity"]["type"] == "IC50"
    page = ranked_targets(tmp_path, top=2, compounds_per_target=2)  # the `targets --format json` rows
    first = {r["gene"]: r for r in page["rows"]}["A4"]["compounds"][0]
    assert first["domain"] == c["domain"] and first["interval"] == c["interval"]


def test_a_db_written_before_the_new_columns_is_migrated(predicted, tmp_path):
    comp, links, kind, pred = predicted
    con = duckdb.connect(str(tmp_path / "results.duckdb"))
    con.execute("CREATE TABLE target_compound_links (run_id VARCHAR, gene VARCHAR, compound_id VARCHAR, "
                "pchembl DOUBLE, activity_type VARCHAR, source VARCHAR, link_type VARCHAR, model_version VARCHAR)")
    con.execute("INSERT INTO target_compound_links VALUES ('old', 'A1', 'C00', 8.0, 'IC50', 'lib', 'measured', '')")
    con.close()
    _db(tmp_path, comp, pred, links.loc[links["target_gene"] == "A1"])
    con = duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True)
    old = con.execute("SELECT pchembl, in_domain FROM target_compound_links WHERE run_id = 'old'").fetchall()
    cards = con.execute("SELECT card_json FROM activity_models").fetchall()
    con.close()
    assert old == [(8.0, None)] and json.loads(cards[0][0])["model_version"] == pred["model_version"].iloc[0]


@pytest.fixture()
def served_predictions(predicted, tmp_path):
    """The API and web page over a store with A4's predicted links and their model card."""
    from tests.flows.served import serve_store

    comp, links, kind, pred = predicted
    _db(tmp_path, comp, pred, links.loc[links["target_gene"] == "A1"].assign(activity_type="IC50"))
    with serve_store(tmp_path) as url:
        yield url


def test_target_page_marks_the_domain_and_links_the_badge_to_the_model_card(predicted, served_predictions):
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.flows.test_web_browser import _require_browser

    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.flows.test_web_browser import CHROMEDRIVER, CHROMIUM

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        pred = predicted[3]
        driver.get(served_predictions + "/#/target/A4")
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: len(d.find_elements("css selector", ".compound")) == len(pred))
        tags = [e.text for e in driver.find_elements("css selector", ".compound .domain")]
        expected = ["in domain" if x else "out of domain" for x in pred["in_domain"]]
        assert tags == expected
        badge = driver.find_elements("css selector", ".compound a.badge.predicted")[0]
        assert badge.text == "predicted" and badge.get_attribute("href").endswith(
            f"#/target/A4/model/{pred['model_version'].iloc[0]}")
        badge.click()
        wait.until(lambda d: d.find_element("id", "model-card").is_displayed())
        body = driver.find_element("id", "model-card-body").text
        assert f"{len(predicted[1])} measured pairs" in body and "cold-drug" in body and "random" in body
        assert pred.attrs["model_card"]["training_data"]["sha256"][:16] in body
        assert driver.find_element("id", "error").text == ""
    finally:
        driver.quit()

