"""Queries of the results DB (CLI and API share them) on a hand-built store with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from flows.cli import main
from flows.results.queries import explain_target, ranked_targets, similar_compounds
from flows.results.ranking import EVIDENCE_TYPES, ScoringError, load_scoring_config, weighted_harmonic_sum
from flows.results.db import write_run
from flows.stages import evidence_rows as er
from flows.stages.evidence import score_targets
from fusion.errors import MoleculeError, QueryError
from molecules.io import read_compounds, standardise_smiles
from molecules.links import target_compound_links
from molecules.similarity import packed_fingerprints

GEFITINIB = "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1"
ERLOTINIB = "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1c(=O)c2c(ncn2C)n(C)c1=O"


def _row(gene, etype, source, raw, score, ref):
    return {"gene": gene, "evidence_type": etype, "source": source, "statistic": "x", "raw_value": raw,
            "score": score, "row_ref": ref, "details_json": "{}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    scoring = load_scoring_config()
    rows = pd.DataFrame([
        _row("G1", "rna_expression", "tumour_vs_normal_de", 2.5, 0.9, "sheet.tsv: 10 vs 5"),
        _row("G1", "copy_number", "amplification_frequency", 0.4, 0.9, "cn.tsv: row 1"),
        _row("G1", "survival_association", "cox_univariate", 3.0, 0.9, "clinical.tsv"),
        _row("G1", "spatial_tumour_region", "spatial_region_enrichment", 1.5, 0.9, "s1.h5ad"),
        _row("G1", "spatial_tumour_region", "spatial_region_enrichment", 1.2, 0.6, "s2.h5ad"),
        _row("G2", "rna_expression", "tumour_vs_normal_de", 4.0, 1.0, "sheet.tsv: 10 vs 5"),
        _row("G3", "copy_number", "amplification_frequency", 0.9, 1.0, "cn.tsv: row 3"),
        _row("G4", "somatic_mutation", "non_silent_mutation_frequency", 0.01, 0.1, "m.maf: data rows 7"),
    ])
    smiles = {"C1": GEFITINIB, "C2": ERLOTINIB, "C3": ASPIRIN, "C4": CAFFEINE}
    compounds = pd.DataFrame({"compound_id": list(smiles), "name": ["gefitinib", "erlotinib", "aspirin", "caffeine"],
                              "canonical_smiles": [standardise_smiles(s) for s in smiles.values()],
                              "inchikey": "", "properties_json": "{}"})
    compounds["morgan_fp"] = [bytes(b) for b in packed_fingerprints(list(compounds["canonical_smiles"]))]
    links = pd.DataFrame({"target_gene": ["G1", "G1", "G2"], "compound_id": ["C1", "C2", "C3"],
                          "pchembl": [8.2, 6.5, 5.0], "activity_type": ["IC50", "pKd", "IC50"],
                          "source": ["assay", "gnn", "assay"], "link_type": ["measured", "predicted", "measured"],
                          "model_version": ["", "gnn-v1", ""]})
    rows = pd.concat([rows, er.tractability_rows(links, scoring, {("G1", "C1"): [3]}, "lib.tsv")], ignore_index=True)
    ranked = score_targets(rows, scoring)
    run = {"run_id": "r1", "cohort": "test", "started_utc": "2026-01-01T00:00:00", "finished_utc": "2026-01-01T00:01:00",
           "catalog": "c.yaml", "config": {}, "inputs_sha256": {}, "metrics": {}}
    exp = pd.DataFrame(columns=["name", "kind", "strategy", "modalities", "task", "metric", "mean", "std", "n_folds"])
    write_run(root, run=run, targets=ranked, compounds=compounds, links=links, experiments=exp, evidence=rows,
              scoring=scoring.to_dict())
    return {"root": root, "scoring": scoring, "rows": rows}


def _by_hand(store, genes, weights):
    w = np.array([weights.get(t, 0.0) for t in EVIDENCE_TYPES])
    spatial = (0.9 + 0.6 / 4) / 1.25  # two spatial rows, harmonic sum over the fullest gene's two rows
    m = {"G1": [0.9, 0.9, 0.9, spatial, 0, 0], "G2": [1.0, 0, 0, 0, 0, 0], "G3": [0, 1.0, 0, 0, 0, 0],
         "G4": [0, 0, 0, 0, 0.1, 0]}
    return dict(zip(genes, weighted_harmonic_sum(np.array([m[g] for g in genes]), w)))


def test_default_ranking_and_scores_by_hand(store):
    page = ranked_targets(store["root"], top=10)
    assert [r["gene"] for r in page["rows"]][0] == "G1" and page["total"] == 4
    expected = _by_hand(store, ["G1", "G2", "G3", "G4"], store["scoring"].weights)
    for r in page["rows"]:
        assert r["score"] == pytest.approx(expected[r["gene"]])
    assert [r["rank"] for r in page["rows"]] == [1, 2, 3, 4]
    assert page["scoring_version"] == store["scoring"].version
    g1 = page["rows"][0]
    assert set(g1["evidence"]) == set(EVIDENCE_TYPES) and g1["evidence"]["rna_expression"] == pytest.approx(0.9)
    c = {x["id"]: x for x in g1["compounds"]}
    assert c["C1"]["link"] == "measured" and c["C1"]["activity"] == {"type": "IC50", "pchembl": 8.2}
    assert c["C2"]["link"] == "predicted" and c["C2"]["model_version"] == "gnn-v1"
    assert Chem.MolToSmiles(Chem.MolFromSmiles(c["C1"]["canonical_smiles"])) == c["C1"]["canonical_smiles"]


def test_custom_weights_filters_and_paging(store):
    page = ranked_targets(store["root"], top=2, weights={"copy_number": 1.0})
    assert [r["gene"] for r in page["rows"]] == ["G3", "G1"]  # copy number alone: 1.0 then 0.9
    assert page["weights"]["rna_expression"] == 0.0 and page["rows"][1]["score"] == pytest.approx(0.9)
    assert [r["gene"] for r in ranked_targets(store["root"], has_compound=True)["rows"]] == ["G1"]  # G2: pChEMBL 5 only
    high = ranked_targets(store["root"], min_score=0.5)
    assert all(r["score"] >= 0.5 for r in high["rows"]) and high["total"] == len(high["rows"]) < 4
    second = ranked_targets(store["root"], top=1, offset=1)
    assert second["rows"][0]["rank"] == 2 and second["total"] == 4


@pytest.mark.parametrize("kwargs, error, message", [
    ({"top": 0}, QueryError, "top must be an integer"), ({"top": 10**6}, QueryError, "top must be"),
    ({"offset": -1}, QueryError, "offset"), ({"min_score": 2.0}, QueryError, "min_score"),
    ({"weights": {"rna_expression": -1}}, ScoringError, ">= 0"),
    ({"weights": {"astrology": 1}}, ScoringError, "unknown evidence type"),
    ({"run_id": "nope"}, QueryError, "run 'nope'"),
])
def test_bad_query_input_is_a_clear_error(store, kwargs, error, message):
    with pytest.raises(error, match=message):
        ranked_targets(store["root"], **kwargs)


def test_explain_target_lists_every_row_behind_the_score(store):
    out = explain_target(store["root"], "g1")  # symbols are matched case-insensitively
    assert out["gene"] == "G1" and out["rank"] == 1
    spatial = next(e for e in out["evidence"] if e["type"] == "spatial_tumour_region")
    assert [r["row_ref"] for r in spatial["rows"]] == ["s1.h5ad", "s2.h5ad"]
    assert spatial["score"] == pytest.approx((0.9 + 0.6 / 4) / 1.25)
    n_rows = sum(e["n_rows"] for e in out["evidence"])
    assert n_rows == int(((store["rows"]["gene"] == "G1") & (store["rows"]["evidence_type"] != "tractability")).sum())
    trac = out["tractability"]
    assert trac["best_pchembl"] == pytest.approx(8.2) and trac["n_active_compounds"] == 2
    assert any("lib.tsv: data rows 3" == r["row_ref"] for r in trac["rows"])
    assert any(r["row_ref"] == "activity model gnn-v1" for r in trac["rows"])
    with pytest.raises(QueryError, match="gene 'NOPE' is not among the ranked genes"):
        explain_target(store["root"], "NOPE")


def test_similar_compounds_match_rdkit_tanimoto(store):
    out = similar_compounds(store["root"], GEFITINIB, top=3)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    q = gen.GetFingerprint(Chem.MolFromSmiles(standardise_smiles(GEFITINIB)))
    lib = {"C2": ERLOTINIB, "C3": ASPIRIN, "C4": CAFFEINE}
    ref = {k: DataStructs.TanimotoSimilarity(q, gen.GetFingerprint(Chem.MolFromSmiles(standardise_smiles(s))))
           for k, s in lib.items()}
    hits = out["hits"]
    assert hits[0]["id"] == "C1" and hits[0]["tanimoto"] == pytest.approx(1.0)
    assert hits[0]["targets"] == [{"gene": "G1", "pchembl": 8.2, "activity_type": "IC50", "link": "measured",
                                   "model_version": None}]
    assert hits[1]["id"] == max(ref, key=ref.get) == "C2"
    for h in hits[1:]:
        assert h["tanimoto"] == pytest.approx(ref[h["id"]])
    with pytest.raises(MoleculeError, match="SMILES 'C1CC\\('"):
        similar_compounds(store["root"], "C1CC(")


def test_cli_targets_target_similar(store, capsys):
    s = str(store["root"])
    capsys.readouterr()
    assert main(["targets", "--store", s, "--top", "2", "--format", "json", "--weights", "copy_number=1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["gene"] for r in rows] == ["G3", "G1"] and {"gene", "rank", "score", "evidence", "compounds"} <= set(rows[0])
    assert main(["targets", "--store", s, "--weights", "copy_number=-2"]) == 2
    assert "weight of 'copy_number' must be a finite number >= 0" in capsys.readouterr().err
    assert main(["targets", "--store", s, "--weights", "tractability=1"]) == 2
    assert "not part of the association score" in capsys.readouterr().err
    assert main(["target", "G1", "--store", s, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["gene"] == "G1"
    assert main(["similar", ERLOTINIB, "--store", s, "--top", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "C2"
    assert main(["target", "NOPE", "--store", s]) == 2


def test_sdf_library_reads_with_bad_records_reported(tmp_path):
    sdf = tmp_path / "library.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        for cid, smi, gene, nm in (("S1", GEFITINIB, "EGFR", "3.2"), ("S2", ASPIRIN, "PTGS1", "20000")):
            mol = Chem.MolFromSmiles(smi)
            for k, v in (("compound_id", cid), ("target_gene", gene), ("activity_type", "IC50"),
                         ("activity_value_nm", nm)):
                mol.SetProp(k, v)
            w.write(mol)
    text = sdf.read_text()
    # a third record: a carbon with five bonds (valence error), reported and skipped, not fatal
    atoms = "".join(f"    {x:.4f}    0.0000    0.0000 {el}   0  0  0  0  0  0  0  0  0  0  0  0\n"
                    for x, el in zip(range(6), "CFFFFF"))
    bonds = "".join(f"  1  {k}  1  0\n" for k in range(2, 7))
    bad = f"bad\n     RDKit          2D\n\n  6  5  0  0  0  0  0  0  0  0999 V2000\n{atoms}{bonds}M  END\n" \
          ">  <compound_id>\nS3\n\n$$$$\n"
    sdf.write_text(text + bad)
    table, errors = read_compounds(sdf)
    assert list(table["compound_id"]) == ["S1", "S2"]
    assert len(errors) == 1 and "library.sdf: record 3, compound_id 'S3'" in errors[0]
    links = target_compound_links(table)
    egfr = links.loc[links["target_gene"] == "EGFR"].iloc[0]
    assert egfr["pchembl"] == pytest.approx(9 - np.log10(3.2))


def test_cached_and_uncached_queries_agree(store):
    from flows.results.queries import clear_cache

    for weights in (None, {"copy_number": 1.0, "rna_expression": 0.2}):
        clear_cache()
        one_off = ranked_targets(store["root"], top=4, weights=weights)  # page compounds read from the DB
        again = ranked_targets(store["root"], top=4, weights=weights)    # second use: every gene's links cached
        assert one_off == again == ranked_targets(store["root"], top=4, weights=weights)
    for gene in ("G1", "g2"):
        clear_cache()
        one_off = explain_target(store["root"], gene)  # this gene's rows read from the DB
        again = explain_target(store["root"], gene)    # second use: every gene's rows read once, then from memory
        assert one_off == again == explain_target(store["root"], gene) and one_off["compounds"]
    clear_cache()
    assert similar_compounds(store["root"], ERLOTINIB, top=4) == similar_compounds(store["root"], ERLOTINIB, top=4)


def test_fast_scores_and_pages_equal_the_full_sort():
    """The API's scoring (a sorting network over the type columns) is weighted_harmonic_sum bit for bit, and a
    page picked after a partition is the page and the ranks of a full lexsort, with ties, filters and deep
    offsets."""
    from flows.results.queries import _harmonic_scores, _page

    rng = np.random.default_rng(7)
    n, t = 3000, len(EVIDENCE_TYPES)
    m = np.round(rng.beta(0.6, 3.0, size=(n, t)), 2)  # rounded: many exact ties
    m[rng.random(m.shape) < 0.4] = 0.0
    m[rng.random(m.shape) < 0.01] = np.nan
    alpha = rng.permutation(n)
    for w in (rng.uniform(0, 1, t), np.r_[1.0, np.zeros(t - 1)], np.ones(t), np.r_[np.zeros(t - 1), 0.3]):
        score = _harmonic_scores(np.ascontiguousarray(np.nan_to_num(m).T), w)
        assert np.array_equal(score, weighted_harmonic_sum(m, w))
        order = np.lexsort((alpha, -score))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)
        for keep in (None, score >= 0.2, m[:, 0] > 0.3, np.zeros(n, dtype=bool)):
            kept = order if keep is None else order[keep[order]]
            for offset, top in ((0, 1), (0, 50), (7, 20), (len(kept) - 5, 50), (n + 10, 5), (0, 1000)):
                page, ranks, total = _page(score, alpha, keep, offset, top)
                assert total == len(kept)
                assert page.tolist() == kept[offset: offset + top].tolist()
                assert ranks.tolist() == rank[kept[offset: offset + top]].tolist()
    with pytest.raises(ScoringError, match="at least one must be > 0"):
        _harmonic_scores(np.nan_to_num(m).T, np.zeros(t))


def test_a_db_swap_in_the_process_is_seen_and_never_mixed(store, tmp_path):
    """A run written (the atomic swap) after queries read the DB is what the next query answers, though the
    previous file's snapshot is cached; a part not yet read of that snapshot is never read from the new file."""
    import shutil

    from flows.results import queries
    from flows.results.db import db_path

    root = tmp_path / "store"
    root.mkdir()
    shutil.copyfile(db_path(store["root"]), db_path(root))
    before = ranked_targets(root, top=4)
    old = queries._on_snapshot(root, None, ("rank",), lambda snap, con: snap)
    assert before["run_id"] == old.run_id == "r1" and "evidence" not in old.parts
    rows = store["rows"].copy()
    rows.loc[(rows["gene"] == "G1") & (rows["evidence_type"] != "tractability"), "score"] = 0.05  # G1 falls
    ranked = score_targets(rows, store["scoring"])
    top2 = ranked["gene"].iloc[0]
    assert top2 != "G1" and int(ranked.loc[ranked["gene"] == "G1", "rank"].iloc[0]) > 1
    run = {"run_id": "r2", "cohort": "test", "started_utc": "2026-01-02T00:00:00",
           "finished_utc": "2026-01-02T00:01:00", "catalog": "c.yaml", "config": {}, "inputs_sha256": {},
           "metrics": {}}
    write_run(root, run=run, targets=ranked, compounds=pd.DataFrame(),
              links=pd.DataFrame(), experiments=pd.DataFrame(columns=["name", "kind", "strategy", "modalities",
                                                                      "task", "metric", "mean", "std", "n_folds"]),
              evidence=rows, scoring=store["scoring"].to_dict())
    with pytest.raises(queries._Stale):
        old.parts_of(None, "evidence")
    assert "evidence" not in old.parts
    after = ranked_targets(root, top=4)
    assert after["run_id"] == "r2" and after["rows"][0]["gene"] == top2
    g1 = explain_target(root, "G1")
    assert g1["run_id"] == "r2" and g1["rank"] == int(ranked.loc[ranked["gene"] == "G1", "rank"].iloc[0])
    assert {r["score"] for e in g1["evidence"] for r in e["rows"]} == {0.05}
    assert ranked_targets(root, top=4, run_id="r1") == before  # the earlier run, from the new file
