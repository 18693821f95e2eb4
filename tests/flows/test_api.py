"""The HTTP API over a hand-built store: same answers as the query functions, every bad-input class a 4xx
with a clear message (never a 500), drawings and spatial pictures."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flows.serving.api import create_app
from flows.results.queries import ranked_targets
from flows.results.ranking import EVIDENCE_TYPES
from tests.flows.test_queries import GEFITINIB, store  # noqa: F401 - the hand-built store fixture


@pytest.fixture(scope="module")
def client(store):  # noqa: F811
    root = store["root"]
    (root / "spatial").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, size=(60, 2))
    a = ad.AnnData(X=rng.poisson(2.0, size=(60, 3)).astype(np.float32),
                   obs=pd.DataFrame(index=[f"s{i}" for i in range(60)]), var=pd.DataFrame(index=["G1", "G3", "ACTB"]))
    a.obsm["spatial"] = xy
    a.write_h5ad(root / "spatial" / "P1.h5ad")
    return TestClient(create_app(root))


def test_targets_match_the_query_function_and_weights_replace(client, store):  # noqa: F811
    r = client.get("/api/targets", params={"top": 10})
    assert r.status_code == 200
    assert r.json()["rows"] == ranked_targets(store["root"], top=10)["rows"]
    assert r.json()["rows"][0]["gene"] == "G1"
    only_cn = client.get("/api/targets", params={"weights": "copy_number:1"}).json()
    assert only_cn["rows"][0]["gene"] == "G3"  # copy number 1.0 beats G1's 0.9
    assert only_cn["weights"]["rna_expression"] == 0.0 and only_cn["weights"]["copy_number"] == 1.0
    paged = client.get("/api/targets", params={"top": 2, "offset": 2}).json()
    assert [x["rank"] for x in paged["rows"]] == [3, 4] and paged["total"] == 4


def test_filters(client):
    rna = client.get("/api/targets", params={"evidence_min": "rna_expression:0.95"}).json()
    assert [x["gene"] for x in rna["rows"]] == ["G2"]
    with_cpd = client.get("/api/targets", params={"has_compound": "true"}).json()
    assert "G1" in [x["gene"] for x in with_cpd["rows"]] and "G3" not in [x["gene"] for x in with_cpd["rows"]]
    top_only = client.get("/api/targets", params={"min_score": 0.5}).json()
    assert all(x["score"] >= 0.5 for x in top_only["rows"]) and top_only["total"] < 4


def test_target_page_and_compounds(client):
    t = client.get("/api/targets/g1").json()  # symbols are matched case-insensitively
    assert t["gene"] == "G1" and {e["type"] for e in t["evidence"]} == set(EVIDENCE_TYPES)
    spatial = next(e for e in t["evidence"] if e["type"] == "spatial_tumour_region")
    assert spatial["n_rows"] == 2
    links = {c["id"]: c["link"] for c in t["compounds"]}
    assert links == {"C1": "measured", "C2": "predicted"}
    sim = client.get("/api/compounds/similar", params={"smiles": GEFITINIB, "top": 2}).json()
    assert sim["hits"][0]["id"] == "C1" and sim["hits"][0]["tanimoto"] == pytest.approx(1.0)
    assert sim["hits"][0]["targets"][0]["gene"] == "G1"
    svg = client.get("/api/compounds/depict.svg", params={"smiles": GEFITINIB})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    png = client.get("/api/targets/G1/spatial.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/experiments").status_code == 200


@pytest.mark.parametrize("path,params,status,words", [
    ("/api/targets/NOPE", {}, 404, "NOPE"),                                   # unknown gene
    ("/api/targets/no results DB", {}, 404, "not among"),  # words of another error in a gene: still a 404, not a 503
    ("/api/targets/is not measured/spatial.png", {}, 404, "not among"),
    ("/api/targets/G2/spatial.png", {}, 404, "not measured"),                 # gene not in any spatial sample
    ("/api/compounds/similar", {"smiles": "C1CC("}, 400, "SMILES"),            # malformed SMILES
    ("/api/compounds/depict.svg", {"smiles": "not-a-smiles"}, 400, "SMILES"),
    ("/api/targets", {"weights": "rna_expression:-1"}, 400, ">= 0"),          # negative weight
    ("/api/targets", {"weights": "bogus:1"}, 400, "bogus"),                   # unknown evidence type
    ("/api/targets", {"weights": "rna_expression:abc"}, 400, "rna_expression"),
    ("/api/targets", {"evidence_min": "bogus:0.1"}, 400, "bogus"),
    ("/api/targets", {"evidence_min": "rna_expression"}, 400, "TYPE:NUMBER"),
    ("/api/targets", {"top": 100000}, 422, "top"),                            # huge page
    ("/api/targets", {"offset": -1}, 422, "offset"),
    ("/api/targets", {"min_score": 2}, 422, "min_score"),
    ("/api/compounds/similar", {"smiles": "CCO", "top": 10**6}, 422, "top"),
    ("/api/compounds/similar", {}, 422, "smiles"),
    ("/api/compounds/depict.svg", {"smiles": "CCO", "width": 10**5}, 422, "width"),
    ("/static/../api.py", {}, 404, ""),
])
def test_bad_input_is_a_clear_4xx(client, path, params, status, words):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert words.lower() in r.text.lower()


def test_store_without_results_is_503_not_500(tmp_path):
    r = TestClient(create_app(tmp_path)).get("/api/targets")
    assert r.status_code == 503 and "no results DB" in r.json()["detail"]


def test_openapi_schema_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/targets", "/api/targets/{gene}", "/api/compounds/similar", "/api/experiments"} <= set(paths)


def test_similar_compounds_without_a_name_serialise(tmp_path):
    """A library compound with no name (NULL in the DB) is returned with name null, not a 500."""
    from flows.results.ranking import load_scoring_config
    from flows.results.db import write_run
    from molecules.io import standardise_smiles
    from molecules.similarity import packed_fingerprints

    smi = [standardise_smiles(s) for s in (GEFITINIB, "CCO")]
    compounds = pd.DataFrame({"compound_id": ["X1", "X2"], "name": [None, "ethanol"], "canonical_smiles": smi,
                              "inchikey": "", "properties_json": "{}",
                              "morgan_fp": [bytes(b) for b in packed_fingerprints(smi)]})
    targets = pd.DataFrame({"gene": ["G1"], "rank": [1], "score": [0.5], **{t: [0.5] for t in EVIDENCE_TYPES},
                            "tractability": [0.0]})
    run = {"run_id": "r", "cohort": "c", "started_utc": "2026-01-01T00:00:00", "finished_utc": "2026-01-01T00:00:01",
           "catalog": "", "config": {}, "inputs_sha256": {}, "metrics": {}}
    exp = pd.DataFrame(columns=["name", "kind", "strategy", "modalities", "task", "metric", "mean", "std", "n_folds"])
    links = pd.DataFrame(columns=["target_gene", "compound_id", "pchembl", "activity_type", "source"])
    write_run(tmp_path, run=run, targets=targets, compounds=compounds, links=links, experiments=exp,
              scoring=load_scoring_config().to_dict())
    r = TestClient(create_app(tmp_path)).get("/api/compounds/similar", params={"smiles": GEFITINIB})
    assert r.status_code == 200
    assert r.json()["hits"][0] == {**r.json()["hits"][0], "id": "X1", "name": None}
