"""The synthetic drug library: every SMILES is the real drug, and the written table plants potent links."""

import re

import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors

from flows.synthetic.compounds import (
    BAD_SMILES,
    CANDIDATE_TARGETS,
    KNOWN_DRUGS,
    drugs_for_gene,
    write_compounds_table,
)
from molecules.io import read_compound_table

# published average molecular weights (g/mol) of some of the drugs, as an independent check
PUBLISHED_MW = {
    "imatinib": 493.6, "gefitinib": 446.9, "erlotinib": 393.4, "lapatinib": 581.1, "crizotinib": 450.3,
    "palbociclib": 447.5, "alpelisib": 441.5, "vemurafenib": 489.9, "dabrafenib": 519.6, "trametinib": 615.4,
    "osimertinib": 499.6, "sotorasib": 560.6, "olaparib": 434.5, "aspirin": 180.16, "caffeine": 194.19,
    "atorvastatin": 558.6, "metformin": 129.16, "paracetamol": 151.16, "ibuprofen": 206.28,
}


@pytest.mark.parametrize("drug", KNOWN_DRUGS, ids=lambda d: d.name)
def test_smiles_parses_and_matches_formula(drug):
    mol = Chem.MolFromSmiles(drug.smiles)
    assert mol is not None
    assert rdMolDescriptors.CalcMolFormula(mol) == drug.formula
    if drug.name in PUBLISHED_MW:
        assert Descriptors.MolWt(mol) == pytest.approx(PUBLISHED_MW[drug.name], abs=0.06)
    assert drug.targets and all(re.fullmatch(r"[A-Z][A-Z0-9]+", t) for t in drug.targets)  # HGNC symbols


def test_library_is_unique_and_candidates_are_covered():
    names = [d.name for d in KNOWN_DRUGS]
    assert len(set(names)) == len(names)
    keys = {Chem.MolToInchiKey(Chem.MolFromSmiles(d.smiles)) for d in KNOWN_DRUGS}
    assert len(keys) == len(KNOWN_DRUGS)
    assert len(CANDIDATE_TARGETS) >= 12
    for gene in CANDIDATE_TARGETS:
        assert len(drugs_for_gene(gene)) >= 2, gene
    assert {d.name for d in drugs_for_gene("EGFR")} >= {"gefitinib", "erlotinib", "osimertinib"}


def test_written_table_plants_potent_compounds(tmp_path):
    high = ["EGFR", "ALK", "PARP1", "NOTAGENE"]  # the last has no known drug: stand-ins are used
    path = tmp_path / "compounds.tsv"
    written = write_compounds_table(path, target_genes_high=high, other_genes=["BRAF", "TP53"], seed=11)
    on_disk = pd.read_csv(path, sep="\t")
    assert list(on_disk.columns) == [
        "compound_id", "name", "smiles", "target_gene", "activity_type", "activity_value_nm", "source",
    ]
    assert len(on_disk) == len(written) and (on_disk["source"] == "synthetic-assay").all()
    assert on_disk["compound_id"].str.fullmatch(r"FXC\d{5}").all()
    assert not list(tmp_path.glob("*.tmp"))

    table, errors = read_compound_table(path)
    assert len(errors) == len(BAD_SMILES) == 2
    assert all("corrupt" not in n for n in table["name"])
    for gene in high:
        potent = table[(table["target_gene"] == gene) & (table["pchembl"] >= 7.0)]
        assert potent["compound_id"].nunique() >= 2, gene
        assert potent["pchembl"].between(7.0, 9.0).all()
    egfr_potent = set(table.loc[(table["target_gene"] == "EGFR") & (table["pchembl"] >= 7.0), "name"])
    assert egfr_potent == {d.name for d in drugs_for_gene("EGFR")}
    weak = table[table["target_gene"].isin(["BRAF", "TP53"])]
    assert len(weak) >= 4 and weak["pchembl"].between(4.0, 5.5).all()
    # a weak measurement never pairs a drug with its own primary target
    by_name = {d.name: d for d in KNOWN_DRUGS}
    for _, row in table[table["pchembl"] < 6].iterrows():
        assert row["target_gene"] not in by_name[row["name"]].targets
    # one compound id per molecule
    assert (table.groupby("compound_id")["canonical_smiles"].nunique() == 1).all()


def test_deterministic_given_seed(tmp_path):
    kwargs = dict(target_genes_high=["MET", "KRAS"], other_genes=["CDK6"])
    a = write_compounds_table(tmp_path / "a.tsv", seed=5, **kwargs)
    b = write_compounds_table(tmp_path / "b.tsv", seed=5, **kwargs)
    c = write_compounds_table(tmp_path / "c.tsv", seed=6, **kwargs)
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert not a.equals(c)


def test_overlapping_gene_lists_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="EGFR"):
        write_compounds_table(tmp_path / "x.tsv", target_genes_high=["EGFR"], other_genes=["EGFR"], seed=0)
