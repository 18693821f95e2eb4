"""Drug-likeness descriptors (RDKit): MW in g/mol, Crippen cLogP, TPSA in A^2, H-bond counts, QED, Ro5."""

from __future__ import annotations

import pandas as pd
from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

from fusion.errors import MoleculeError

__all__ = ["DESCRIPTOR_COLUMNS", "descriptors", "add_descriptors"]

DESCRIPTOR_COLUMNS: tuple[str, ...] = (
    "mw", "clogp", "tpsa", "hbd", "hba", "rotatable_bonds", "qed", "lipinski_violations",
)


def descriptors(mol: Chem.Mol | str) -> dict[str, float | int]:
    """Descriptors of one molecule (or SMILES): mw (g/mol), clogp, tpsa (A^2), hbd, hba, rotatable_bonds, qed, lipinski_violations.

    hbd / hba are Lipinski's counts (NH + OH, N + O), the ones the rule of five uses; a
    violation is each of mw > 500, clogp > 5, hbd > 5, hba > 10.
    """
    if isinstance(mol, str):
        smiles = mol
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise MoleculeError(f"SMILES {smiles!r}: not parseable")
    mw = Descriptors.MolWt(mol)
    clogp = Crippen.MolLogP(mol)
    hbd = rdMolDescriptors.CalcNumLipinskiHBD(mol)
    hba = rdMolDescriptors.CalcNumLipinskiHBA(mol)
    return {
        "mw": float(mw),
        "clogp": float(clogp),
        "tpsa": float(rdMolDescriptors.CalcTPSA(mol)),
        "hbd": int(hbd),
        "hba": int(hba),
        "rotatable_bonds": int(rdMolDescriptors.CalcNumRotatableBonds(mol)),
        "qed": float(QED.qed(mol)),
        "lipinski_violations": int(mw > 500) + int(clogp > 5) + int(hbd > 5) + int(hba > 10),
    }


def add_descriptors(df: pd.DataFrame, smiles_col: str = "canonical_smiles") -> pd.DataFrame:
    """Return a copy of ``df`` with the descriptor columns added (each distinct SMILES computed once)."""
    if smiles_col not in df.columns:
        raise MoleculeError(f"compound table: missing column {smiles_col!r} (found {list(df.columns)})")
    per_smiles: dict[str, dict] = {}
    for row, smiles in zip(df.index, df[smiles_col]):
        if smiles in per_smiles:
            continue
        try:
            per_smiles[smiles] = descriptors(smiles)
        except MoleculeError as exc:
            raise MoleculeError(f"compound table, row {row!r}, column {smiles_col!r}: {exc}") from None
    table = pd.DataFrame.from_dict(per_smiles, orient="index", columns=list(DESCRIPTOR_COLUMNS))
    out = df.copy()
    values = table.reindex(df[smiles_col].to_numpy())
    for col in DESCRIPTOR_COLUMNS:
        out[col] = values[col].to_numpy()
    return out.astype({"hbd": int, "hba": int, "rotatable_bonds": int, "lipinski_violations": int}) if len(out) else out
