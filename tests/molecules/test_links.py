"""Compound-target links and per-gene chemistry summaries on hand-built and generated tables."""

import pandas as pd
import pytest

from flows.synthetic.compounds import write_compounds_table
from fusion.errors import MoleculeError
from molecules.io import read_compound_table
from molecules.links import compounds_for_targets, summarise_target_chemistry, target_compound_links


@pytest.fixture
def measurements():
    return pd.DataFrame({
        "compound_id": ["c1", "c1", "c2", "c3", "c1", "c4"],
        "name": ["one", "one", "two", "three", "one", "four"],
        "canonical_smiles": ["CCO", "CCO", "CCN", "CCC", "CCO", "CCCl"],
        "target_gene": ["EGFR", "EGFR", "EGFR", "EGFR", "KRAS", "TP53"],
        "activity_type": ["IC50", "Ki", "IC50", "IC50", "IC50", "EC50"],
        "activity_value_nm": [100.0, 1.0, 1000.0, 50000.0, 10000.0, 20000.0],
        "pchembl": [7.0, 9.0, 6.0, 4.30103, 5.0, 4.69897],
        "source": ["assay-a", "assay-b", "assay-a", "assay-a", "assay-a", ""],
    })


def test_links_keep_best_measurement(measurements):
    links = target_compound_links(measurements)
    assert list(zip(links["target_gene"], links["compound_id"])) == [
        ("EGFR", "c1"), ("EGFR", "c2"), ("EGFR", "c3"), ("KRAS", "c1"), ("TP53", "c4"),
    ]
    c1 = links.iloc[0]
    assert c1["pchembl"] == 9.0 and c1["activity_type"] == "Ki" and c1["activity_value_nm"] == 1.0
    assert c1["n_measurements"] == 2 and c1["source"] == "assay-a;assay-b"
    assert links["n_measurements"].tolist() == [2, 1, 1, 1, 1]
    assert links.iloc[4]["source"] == "unknown"


def test_compounds_for_targets(measurements):
    links = target_compound_links(measurements)
    out = compounds_for_targets(links, ["KRAS", "EGFR"])
    assert list(zip(out["target_gene"], out["compound_id"])) == [
        ("KRAS", "c1"), ("EGFR", "c1"), ("EGFR", "c2"), ("EGFR", "c3"),
    ]
    potent = compounds_for_targets(links, ["KRAS", "EGFR"], min_pchembl=6.0)
    assert potent["compound_id"].tolist() == ["c1", "c2"]
    assert compounds_for_targets(links, ["BRCA1"]).empty


def test_summary_counts(measurements):
    summary = summarise_target_chemistry(target_compound_links(measurements))
    assert summary.loc["EGFR"].tolist() == [3, 2, 9.0]  # n_compounds, n_active (>= 6.0), best_pchembl
    assert summary.loc["KRAS"].tolist() == [1, 0, 5.0]
    assert summary.loc["TP53", "n_active"] == 0
    assert list(summary.index) == ["EGFR", "KRAS", "TP53"]  # indexed by gene, sorted by best pchembl
    assert list(summary.columns) == ["n_compounds", "n_active", "best_pchembl"]


def test_missing_column_is_named(measurements):
    with pytest.raises(MoleculeError, match="pchembl"):
        target_compound_links(measurements.drop(columns="pchembl"))


def test_generated_table_separates_planted_targets_from_decoys(tmp_path):
    high, other = ["EGFR", "MET", "KRAS"], ["BRAF", "CDK4", "TP53", "GAPDH"]
    write_compounds_table(tmp_path / "compounds.tsv", target_genes_high=high, other_genes=other, seed=7)
    compounds, errors = read_compound_table(tmp_path / "compounds.tsv")
    assert len(errors) == 2
    summary = summarise_target_chemistry(target_compound_links(compounds))
    assert set(summary.index) == set(high + other)
    assert (summary.loc[high, "n_active"] >= 2).all() and (summary.loc[high, "best_pchembl"] >= 7.0).all()
    assert (summary.loc[other, "n_active"] == 0).all() and (summary.loc[other, "best_pchembl"] <= 5.5).all()
    assert sorted(summary.index[:3]) == sorted(high)
