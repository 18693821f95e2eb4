"""Drug-likeness descriptors against hand-checked values."""

import pandas as pd
import pytest

from fusion.errors import MoleculeError
from molecules.properties import DESCRIPTOR_COLUMNS, add_descriptors, descriptors

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1c(=O)c2c(ncn2C)n(C)c1=O"
ATORVASTATIN = "CC(C)c1c(C(=O)Nc2ccccc2)c(-c2ccccc2)c(-c2ccc(F)cc2)n1CC[C@@H](O)C[C@@H](O)CC(=O)O"


def test_aspirin():
    d = descriptors(ASPIRIN)
    assert d["mw"] == pytest.approx(180.16, abs=0.01)  # C9H8O4
    assert d["hbd"] == 1  # one OH
    assert d["hba"] == 4  # four O
    assert d["rotatable_bonds"] == 2
    assert d["lipinski_violations"] == 0
    assert 0 < d["qed"] < 1


def test_caffeine_tpsa_and_counts():
    d = descriptors(CAFFEINE)
    assert d["tpsa"] == pytest.approx(61.82, abs=0.01)  # RDKit's Ertl TPSA for caffeine
    assert d["mw"] == pytest.approx(194.19, abs=0.01)
    assert d["hbd"] == 0 and d["hba"] == 6  # 4 N + 2 O, no NH/OH
    assert d["rotatable_bonds"] == 0


def test_lipinski_violations():
    # atorvastatin: MW 558.6 > 500 and cLogP > 5; 4 NH/OH (<= 5), 7 N+O (<= 10) -> 2 violations
    d = descriptors(ATORVASTATIN)
    assert d["mw"] > 500 and d["clogp"] > 5 and d["hbd"] == 4 and d["hba"] == 7
    assert d["lipinski_violations"] == 2
    # sorbitol: 6 OH donors -> only the donor rule is violated
    d = descriptors("OCC(O)C(O)C(O)C(O)CO")
    assert (d["hbd"], d["hba"], d["lipinski_violations"]) == (6, 6, 1)
    # tetracontane: MW 563 and very lipophilic -> 2
    assert descriptors("C" * 40)["lipinski_violations"] == 2


def test_add_descriptors_per_row_and_repeated_smiles():
    df = pd.DataFrame({"compound_id": ["a", "b", "a2"], "canonical_smiles": [ASPIRIN, CAFFEINE, ASPIRIN]})
    out = add_descriptors(df)
    assert list(out.columns) == ["compound_id", "canonical_smiles", *DESCRIPTOR_COLUMNS]
    assert out["mw"].tolist() == pytest.approx([180.159, 194.194, 180.159], abs=1e-3)
    assert out["lipinski_violations"].tolist() == [0, 0, 0]
    assert "mw" not in df.columns  # input untouched


def test_add_descriptors_errors():
    with pytest.raises(MoleculeError, match="smiles_col|'smiles'"):
        add_descriptors(pd.DataFrame({"x": [1]}), smiles_col="smiles")
    with pytest.raises(MoleculeError, match="row 1"):
        add_descriptors(pd.DataFrame({"canonical_smiles": [ASPIRIN, "C1CC("]}))
