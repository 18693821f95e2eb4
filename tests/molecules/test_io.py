"""Reading compound tables and SD files: standardisation, pchembl, skip-and-report, clear errors."""

import math

import pandas as pd
import pytest
from rdkit import Chem

from fusion.errors import MoleculeError
from molecules.io import pchembl_from_nm, read_compound_table, read_sdf, standardise_smiles

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
HEADER = "compound_id\tname\tsmiles\ttarget_gene\tactivity_type\tactivity_value_nm\n"


def _write(path, rows, header=HEADER):
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def test_aspirin_canonical_smiles_inchikey_and_pchembl(tmp_path):
    path = _write(tmp_path / "c.tsv", [
        ("C1", "aspirin", "OC(=O)c1ccccc1OC(C)=O", "PTGS1", "IC50", 10),
        ("C2", "aspirin", "O=C(O)c1ccccc1OC(=O)C", "PTGS2", "IC50", 1000),
    ])
    table, errors = read_compound_table(path)
    assert errors == []
    assert list(table["canonical_smiles"]) == [ASPIRIN, ASPIRIN]
    assert list(table["inchikey"]) == ["BSYNRYMUTXBXSQ-UHFFFAOYSA-N"] * 2
    # 10 nM = 1e-8 M -> pchembl 8; 1 uM -> 6
    assert table["pchembl"].tolist() == pytest.approx([8.0, 6.0])
    assert table["target_gene"].tolist() == ["PTGS1", "PTGS2"]


def test_csv_is_read_by_extension(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("compound_id,smiles,target_gene,activity_type,activity_value_nm\nC1,CCO,EGFR,IC50,1e5\n")
    table, errors = read_compound_table(path)
    assert errors == []
    assert table.loc[0, "canonical_smiles"] == "CCO"
    assert table.loc[0, "pchembl"] == pytest.approx(4.0)


def test_sodium_salt_is_standardised_to_parent_acid(tmp_path):
    assert standardise_smiles("CC(=O)Oc1ccccc1C(=O)[O-].[Na+]") == ASPIRIN
    # a hydrochloride keeps the neutral base
    assert standardise_smiles("CCN(CC)CC.Cl") == "CCN(CC)CC"
    path = _write(tmp_path / "c.tsv", [("C1", "aspirin sodium", "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", "PTGS1", "IC50", 100)])
    table, errors = read_compound_table(path)
    assert errors == []
    assert table.loc[0, "canonical_smiles"] == ASPIRIN
    assert table.loc[0, "smiles"] == "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]"  # the input is kept alongside


def test_standardise_smiles_rejects_garbage():
    with pytest.raises(MoleculeError, match="C1CC\\("):
        standardise_smiles("C1CC(")
    with pytest.raises(MoleculeError, match="[Kk]ekul"):
        standardise_smiles("c1cccc1")
    with pytest.raises(MoleculeError, match="empty"):
        standardise_smiles("")


def test_bad_rows_are_reported_with_row_number_and_skipped(tmp_path):
    path = _write(tmp_path / "c.tsv", [
        ("C1", "aspirin", ASPIRIN, "PTGS1", "IC50", 10),
        ("C2", "broken", "C1CC(", "EGFR", "IC50", 10),
        ("C3", "caffeine", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "ADORA1", "Ki", 20000),
        ("C4", "no-activity", "CCO", "EGFR", "IC50", "n/a"),
        ("C5", "negative", "CCO", "EGFR", "IC50", -3),
    ])
    table, errors = read_compound_table(path)
    assert table["compound_id"].tolist() == ["C1", "C3"]
    assert len(errors) == 3
    assert str(path) in errors[0] and "row 2 (line 3)" in errors[0] and "'C2'" in errors[0]
    assert "C1CC(" in errors[0]
    assert "row 4 (line 5)" in errors[1] and "'C4'" in errors[1] and "activity_value_nm" in errors[1]
    assert "row 5 (line 6)" in errors[2] and "'C5'" in errors[2]
    assert table.loc[1, "pchembl"] == pytest.approx(9 - math.log10(20000))


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("compound_id\tsmiles\ttarget_gene\tactivity_value_nm\nC1\tCCO\tEGFR\t10\n")
    with pytest.raises(MoleculeError) as info:
        read_compound_table(path)
    assert str(path) in str(info.value) and "'activity_type'" in str(info.value)


def test_missing_file_is_a_molecule_error(tmp_path):
    with pytest.raises(MoleculeError, match="not found"):
        read_compound_table(tmp_path / "nope.tsv")


def test_pchembl_from_nm_known_values():
    assert pchembl_from_nm(1.0) == pytest.approx(9.0)
    assert list(pchembl_from_nm(pd.Series([10.0, 100.0, 1e6]))) == pytest.approx([8.0, 7.0, 3.0])


def test_read_sdf_standardises_and_reports_bad_records(tmp_path):
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    for name, smiles, value in [("asp-na", "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", 10.0), ("ethanol", "CCO", 1e4)]:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", name)
        mol.SetProp("activity_value_nm", str(value))
        writer.write(mol)
    writer.close()
    # append a record with a pentavalent carbon (parses as a mol block, fails sanitisation)
    pentavalent = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)
    pentavalent.UpdatePropertyCache(strict=False)
    bad_block = "\n".join(["bad-one"] + Chem.MolToMolBlock(pentavalent).split("\n")[1:])
    path.write_text(path.read_text() + bad_block + "\n$$$$\n" + "garbage-record\nno counts line\n\n$$$$\n")
    table, errors = read_sdf(path)
    assert table["compound_id"].tolist() == ["asp-na", "ethanol"]
    assert table["canonical_smiles"].tolist() == [ASPIRIN, "CCO"]
    assert table["pchembl"].tolist() == pytest.approx([8.0, 5.0])
    assert len(errors) == 2
    assert str(path) in errors[0] and "record 3" in errors[0] and "'bad-one'" in errors[0]
    assert "valence" in errors[0].lower()
    assert "record 4" in errors[1]


def test_a_plain_smiles_library_is_read_without_activities(tmp_path):
    """What `scan` calls a compound table the reader reads: a SMILES column alone (any case) is a library."""
    from molecules.io import read_compound_table

    path = tmp_path / "library.csv"
    path.write_text("name,SMILES\naspirin,CC(=O)Oc1ccccc1C(=O)O\nbad,C1CC\ncaffeine,Cn1cnc2c1c(=O)n(C)c(=O)n2C\n")
    table, errors = read_compound_table(path)
    assert list(table["compound_id"]) == ["row1", "row3"] and "pchembl" not in table.columns
    assert list(table["canonical_smiles"]) == ["CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O"]
    assert len(errors) == 1 and "row 2" in errors[0] and "'row2'" in errors[0]


def test_activity_columns_come_all_or_none(tmp_path):
    from fusion.errors import MoleculeError
    from molecules.io import read_compound_table

    path = tmp_path / "half.tsv"
    path.write_text("compound_id\tsmiles\ttarget_gene\nc1\tCCO\tEGFR\n")
    with pytest.raises(MoleculeError, match="half.tsv: missing required column 'activity_type'"):
        read_compound_table(path)
