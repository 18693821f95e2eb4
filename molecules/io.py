"""Read compound tables (TSV/CSV) and SD files into standardised molecules with pchembl values.

Every SMILES is parsed with RDKit and standardised (cleanup, largest fragment, neutralised,
optionally canonical tautomer); the result is written as ``canonical_smiles`` with its
``inchikey``. Bad records are skipped and reported as strings naming the file, the row and
the compound; a table without a required column raises :class:`MoleculeError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

from fusion.errors import MoleculeError

__all__ = [
    "REQUIRED_COLUMNS",
    "parse_smiles",
    "standardise_mol",
    "standardise_smiles",
    "pchembl_from_nm",
    "read_compound_table",
    "read_sdf",
    "read_compounds",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("compound_id", "smiles", "target_gene", "activity_type", "activity_value_nm")
# a plain library needs only a SMILES column (these names, any case); activities need all three columns
SMILES_COLUMNS: tuple[str, ...] = ("smiles", "canonical_smiles", "isomeric_smiles")
ACTIVITY_COLUMNS: tuple[str, ...] = ("target_gene", "activity_type", "activity_value_nm")


def _sanitise(mol: Chem.Mol | None, what: str) -> Chem.Mol:
    """Sanitise an unsanitised RDKit molecule, raising MoleculeError with RDKit's reason."""
    if mol is None:
        raise MoleculeError(f"{what}: not parseable (syntax error)")
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several exception types (KekulizeException, ...)
        raise MoleculeError(f"{what}: {type(exc).__name__}: {exc}") from None
    return mol


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse one SMILES into a sanitised RDKit molecule, raising MoleculeError with the reason."""
    if not isinstance(smiles, str) or not smiles.strip():
        raise MoleculeError(f"SMILES {smiles!r}: empty")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip(), sanitize=False)
        return _sanitise(mol, f"SMILES {smiles!r}")


def standardise_mol(mol: Chem.Mol, *, canonical_tautomer: bool = False) -> Chem.Mol:
    """Standardise a molecule: cleanup, keep the largest organic fragment, neutralise, tautomer."""
    with rdBase.BlockLogs():
        out = rdMolStandardize.Cleanup(mol)
        out = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(out)
        out = rdMolStandardize.Uncharger().uncharge(out)
        if canonical_tautomer:
            out = rdMolStandardize.TautomerEnumerator().Canonicalize(out)
    if out is None or out.GetNumAtoms() == 0:
        raise MoleculeError(f"molecule {Chem.MolToSmiles(mol)!r}: nothing left after standardisation")
    return out


def standardise_smiles(smiles: str, *, canonical_tautomer: bool = False) -> str:
    """Canonical SMILES of the standardised parent molecule; MoleculeError if unparsable."""
    return Chem.MolToSmiles(standardise_mol(parse_smiles(smiles), canonical_tautomer=canonical_tautomer))


def pchembl_from_nm(activity_value_nm: np.ndarray | pd.Series | float) -> np.ndarray | pd.Series | float:
    """pchembl = -log10(activity in mol/L) from an activity in nM (10 nM -> 8.0)."""
    return 9.0 - np.log10(activity_value_nm)


def _standardise_unique(smiles: pd.Series, canonical_tautomer: bool) -> dict[str, tuple[str, str] | str]:
    """Map each distinct SMILES to (canonical_smiles, inchikey), or to the reason it failed."""
    out: dict[str, tuple[str, str] | str] = {}
    for s in pd.unique(smiles):
        try:
            mol = standardise_mol(parse_smiles(s), canonical_tautomer=canonical_tautomer)
            with rdBase.BlockLogs():
                out[s] = (Chem.MolToSmiles(mol), Chem.MolToInchiKey(mol))
        except MoleculeError as exc:
            out[s] = str(exc)
    return out


def _separator(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".xz", ".zip")]
    return "," if suffixes and suffixes[-1] == ".csv" else "\t"


def read_compound_table(
    path: str | os.PathLike, *, canonical_tautomer: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Read a compounds TSV/CSV into standardised rows; report bad rows. With activity columns (target_gene,
    activity_type, activity_value_nm in nM) the rows carry pchembl; a plain SMILES library needs none.

    Returns the valid rows (the input columns plus ``canonical_smiles``, ``inchikey``, ``pchembl``
    and ``source_row``, the 1-based data row) and one error string per skipped row, naming the file, the data row (1-based,
    header not counted), its line in the file, the compound id and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise MoleculeError(f"{path}: compound table not found")
    try:
        raw = pd.read_csv(path, sep=_separator(path), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise MoleculeError(f"{path}: not a readable {_separator(path)!r}-separated table: {exc}") from None
    raw = _library_columns(raw, path)
    raw = raw.apply(lambda c: c.str.strip())
    row_no = np.arange(1, len(raw) + 1)
    blank = (raw == "").all(axis=1).to_numpy()
    has_activity = ACTIVITY_COLUMNS[0] in raw.columns

    reason = pd.Series("", index=raw.index, dtype=object)
    value_nm = pd.to_numeric(raw["activity_value_nm"], errors="coerce") if has_activity else None
    if has_activity:
        reason[~(value_nm > 0)] = ("activity_value_nm must be a positive number in nM, got "
                                   + raw["activity_value_nm"].map(repr))
    for col in ("compound_id", *(("target_gene", "activity_type") if has_activity else ())):
        reason[(raw[col] == "") & (reason == "")] = f"empty {col}"

    parsed = _standardise_unique(raw.loc[reason == "", "smiles"], canonical_tautomer)
    smiles_failure = raw["smiles"].map(lambda s: parsed.get(s) if isinstance(parsed.get(s), str) else "")
    reason[(reason == "") & (smiles_failure != "")] = smiles_failure

    bad = (reason != "").to_numpy() & ~blank
    errors = [
        f"{path}: row {r} (line {r + 1}), compound_id {cid!r}: {why}"
        for r, cid, why in zip(row_no[bad], raw["compound_id"][bad], reason[bad])
    ]
    good = (reason == "").to_numpy() & ~blank
    table = raw.loc[good].copy()
    table["source_row"] = row_no[good]
    table["canonical_smiles"] = table["smiles"].map(lambda s: parsed[s][0])
    table["inchikey"] = table["smiles"].map(lambda s: parsed[s][1])
    if has_activity:
        table["activity_value_nm"] = value_nm[good].astype(float)
        table["pchembl"] = pchembl_from_nm(table["activity_value_nm"].to_numpy())
    return table.reset_index(drop=True), errors


def _library_columns(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The table's columns checked: a SMILES column (named as in SMILES_COLUMNS, any case; renamed
    ``smiles``), ``compound_id`` (``row<N>`` when absent), and either all ACTIVITY_COLUMNS or none."""
    raw.columns = [c.strip() for c in raw.columns]
    lower = {c.lower(): c for c in raw.columns}
    smiles = next((lower[c] for c in SMILES_COLUMNS if c in lower), None)
    if smiles is None:
        raise MoleculeError(f"{path}: missing required column 'smiles' (one of {list(SMILES_COLUMNS)}, any case; "
                            f"found {list(raw.columns)})")
    raw = raw.rename(columns={smiles: "smiles"})
    if "compound_id" not in raw.columns:
        raw.insert(0, "compound_id", [f"row{i}" for i in range(1, len(raw) + 1)])
    present = [c for c in ACTIVITY_COLUMNS if c in raw.columns]
    if present and len(present) < len(ACTIVITY_COLUMNS):
        missing = [c for c in ACTIVITY_COLUMNS if c not in raw.columns]
        raise MoleculeError(f"{path}: missing required column {missing[0]!r} (activities need all of "
                            f"{list(ACTIVITY_COLUMNS)}; a library without activities needs none; found "
                            f"{list(raw.columns)})")
    return raw


def read_sdf(
    path: str | os.PathLike, *, id_field: str | None = None, canonical_tautomer: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Read an SD file into standardised molecules (one row per record); report and skip bad records.

    ``compound_id`` comes from the ``id_field`` property when given, else the record's title
    line, else 'record<N>'. All SD properties become columns; when ``activity_value_nm`` is
    among them, ``pchembl`` is added. Error strings name the file, record number (1-based),
    compound id and reason. ``source_row`` is the record number; ``.sdf.gz`` files are read too.
    """
    import gzip

    path = Path(path)
    if not path.is_file():
        raise MoleculeError(f"{path}: SD file not found")
    rows: list[dict] = []
    errors: list[str] = []
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle, rdBase.BlockLogs():
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=False, removeHs=False)
        for n, mol in enumerate(supplier, start=1):
            props = mol.GetPropsAsDict(includePrivate=False, includeComputed=False) if mol is not None else {}
            title = mol.GetProp("_Name").strip() if mol is not None and mol.HasProp("_Name") else ""
            cid = str(props.get(id_field, "")) if id_field else ""
            cid = cid or title or f"record{n}"
            try:
                mol = _sanitise(mol, "mol block")
                mol = standardise_mol(Chem.RemoveHs(mol), canonical_tautomer=canonical_tautomer)
            except MoleculeError as exc:
                errors.append(f"{path}: record {n}, compound_id {cid!r}: {exc}")
                continue
            except Exception as exc:  # RemoveHs can fail on odd valences
                errors.append(f"{path}: record {n}, compound_id {cid!r}: {type(exc).__name__}: {exc}")
                continue
            rows.append({
                "compound_id": cid, **{k: v for k, v in props.items() if k != "compound_id"},
                "canonical_smiles": Chem.MolToSmiles(mol), "inchikey": Chem.MolToInchiKey(mol),
                "source_row": n,
            })
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["compound_id", "canonical_smiles", "inchikey"])
    if "activity_value_nm" in table.columns:
        value_nm = pd.to_numeric(table["activity_value_nm"], errors="coerce")
        bad = ~(value_nm > 0) & table["activity_value_nm"].notna()
        for n, cid, v in zip(table.loc[bad, "source_row"], table.loc[bad, "compound_id"],
                             table.loc[bad, "activity_value_nm"]):
            errors.append(f"{path}: record {n}, compound_id {cid!r}: activity_value_nm must be a positive "
                          f"number in nM, got {v!r}")
        table = table.loc[~bad].reset_index(drop=True)
        table["activity_value_nm"] = value_nm[~bad].to_numpy()
        table["pchembl"] = pchembl_from_nm(table["activity_value_nm"].where(table["activity_value_nm"] > 0))
    return table, errors


def read_compounds(path: str | os.PathLike, *, canonical_tautomer: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Read a compound library: an SD file (``.sdf``, ``.sdf.gz``, ``.sd``) or a TSV/CSV table.

    SD records may carry the table's columns as properties (``target_gene``, ``activity_type``,
    ``activity_value_nm``, ...) to give activities; without them they are library compounds only.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and (suffixes[-1] in (".sdf", ".sd") or suffixes[-2:] == [".sdf", ".gz"]):
        return read_sdf(path, id_field="compound_id", canonical_tautomer=canonical_tautomer)
    return read_compound_table(path, canonical_tautomer=canonical_tautomer)
