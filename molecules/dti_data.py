"""Drug-target interaction (DTI) tables: the Davis folder and generic CSV tables, and their splits.

A ``DTITable`` holds the unique drugs (SMILES) and targets (names, optional sequences) once, and
one row per measured pair as integer indices into them plus the value (pKd / pChEMBL, -log10 M).
Splits return boolean test masks over the pairs: random, scaffold (Bemis-Murcko scaffolds of the
drugs kept apart), cold-drug (no test drug in train), cold-target (no test target in train).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from fusion.errors import MoleculeError

__all__ = ["DTITable", "read_davis", "read_dti_table", "split_mask", "SPLITS", "murcko_scaffold"]

SPLITS = ("random", "scaffold", "cold-drug", "cold-target")


@dataclass(frozen=True)
class DTITable:
    """Pairs (drug_idx, target_idx, value) over unique drugs and targets; ``split`` is 'train'/'test' or None."""

    smiles: list[str]
    targets: list[str]
    sequences: list[str] | None
    drug_idx: np.ndarray  # (n_pairs,) int64 into smiles
    target_idx: np.ndarray  # (n_pairs,) int64 into targets
    value: np.ndarray  # (n_pairs,) float64, pKd / pChEMBL (-log10 molar)
    split: np.ndarray | None = None  # (n_pairs,) object: 'train' / 'test'
    source: str = ""
    activity_types: tuple[str, ...] = ()  # measurement types of the values (Kd, Ki, IC50 ...); never pooled

    def __len__(self) -> int:
        return len(self.value)

    def subset(self, mask: np.ndarray) -> "DTITable":
        """The pairs where ``mask`` is true (drugs and targets lists kept whole, so indices stay valid)."""
        return DTITable(self.smiles, self.targets, self.sequences, self.drug_idx[mask], self.target_idx[mask],
                        self.value[mask], None if self.split is None else self.split[mask], self.source,
                        self.activity_types)

    def to_frame(self) -> pd.DataFrame:
        """One row per pair: smiles, target, (sequence), value, (split)."""
        df = pd.DataFrame({"smiles": np.asarray(self.smiles, dtype=object)[self.drug_idx],
                           "target": np.asarray(self.targets, dtype=object)[self.target_idx]})
        if self.sequences is not None:
            df["sequence"] = np.asarray(self.sequences, dtype=object)[self.target_idx]
        df["value"] = self.value
        if self.split is not None:
            df["split"] = self.split
        return df


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MoleculeError(f"{path}: expected a JSON file, could not read it ({exc})") from exc


def read_davis(folder: str | Path) -> DTITable:
    """The Davis kinase set (68 drugs x 442 kinases, Kd nM -> pKd) with the DeepDTA setting-1 folds.

    Pairs are the non-NaN cells of Y in row-major order (GraphDTA's ``np.where(~np.isnan(Y))``);
    the fold files index these pairs: the five train folds are 'train', the test fold 'test'.
    """
    folder = Path(folder)
    ligands = _read_json(folder / "ligands_can.txt")
    proteins = _read_json(folder / "proteins.txt")
    if not isinstance(ligands, dict) or not isinstance(proteins, dict):
        raise MoleculeError(f"{folder}: ligands_can.txt and proteins.txt must be JSON objects id -> string")
    try:
        with open(folder / "Y", "rb") as handle:
            kd_nm = np.asarray(pickle.load(handle, encoding="latin1"), dtype=np.float64)
    except (OSError, pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise MoleculeError(f"{folder / 'Y'}: expected a pickled Kd matrix, could not read it ({exc})") from exc
    if kd_nm.shape != (len(ligands), len(proteins)):
        raise MoleculeError(f"{folder / 'Y'}: shape {kd_nm.shape}, expected "
                            f"({len(ligands)} ligands, {len(proteins)} proteins)")
    rows, cols = np.where(~np.isnan(kd_nm))
    value = -np.log10(kd_nm[rows, cols] / 1e9)
    split = np.full(len(rows), None, dtype=object)
    train_folds = _read_json(folder / "folds" / "train_fold_setting1.txt")
    test_fold = _read_json(folder / "folds" / "test_fold_setting1.txt")
    train = np.array([i for fold in train_folds for i in fold], dtype=np.int64)
    test = np.asarray(test_fold, dtype=np.int64)
    for name, idx in (("train_fold_setting1.txt", train), ("test_fold_setting1.txt", test)):
        if idx.size and (idx.min() < 0 or idx.max() >= len(rows)):
            raise MoleculeError(f"{folder / 'folds' / name}: index {idx.max()} out of range "
                                f"for {len(rows)} measured pairs")
    split[train] = "train"
    split[test] = "test"
    keep = split != None  # noqa: E711  (pairs in no fold are dropped, as GraphDTA does)
    table = DTITable(list(ligands.values()), list(proteins.keys()), list(proteins.values()),
                     rows.astype(np.int64), cols.astype(np.int64), value, split, source=str(folder),
                     activity_types=("Kd",))
    return table.subset(keep)


def _activity_types(df: pd.DataFrame, path: Path, activity_type: str | None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Rows of the chosen activity type; with several types and none chosen, each (target, type) becomes
    its own task ``target|type`` so Kd, Ki and IC50 values are never pooled into one target's values."""
    if "activity_type" not in df.columns:
        if activity_type not in (None, "all"):
            raise MoleculeError(f"{path}: --activity-type {activity_type!r} given but the table has no "
                                f"'activity_type' column (found {list(df.columns)})")
        return df, ()
    kinds = df["activity_type"].astype(str).str.strip()
    if activity_type not in (None, "all"):
        keep = kinds.str.lower() == activity_type.strip().lower()
        if not keep.any():
            raise MoleculeError(f"{path}: column 'activity_type' has no {activity_type!r} rows "
                                f"(found {sorted(kinds.unique())})")
        return df.loc[keep.to_numpy()].reset_index(drop=True), (str(kinds[keep].iloc[0]),)
    types = tuple(sorted(kinds.unique()))
    if len(types) > 1:
        df = df.assign(target=df["target"].astype(str) + "|" + kinds)
    return df, types


def read_dti_table(path: str | Path, activity_type: str | None = None) -> DTITable:
    """A CSV with columns smiles, target, value and optional sequence, split (train/test), activity_type.

    With an ``activity_type`` column, ``activity_type`` picks one type (e.g. 'Kd'); when none is picked
    and the column holds several types, each target is split into one task per type (``EGFR|IC50``).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise MoleculeError(f"{path}: could not read the DTI table ({exc})") from exc
    missing = [c for c in ("smiles", "target", "value") if c not in df.columns]
    if missing:
        raise MoleculeError(f"{path}: missing column(s) {missing}; expected smiles, target, value "
                            f"[, sequence, split, activity_type], found {list(df.columns)}")
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(value))
    if bad.size:
        raise MoleculeError(f"{path}: column 'value' row {bad[0] + 2}: expected a number, found {df['value'].iloc[bad[0]]!r}")
    df, types = _activity_types(df, path, activity_type)
    value = pd.to_numeric(df["value"]).to_numpy(np.float64)
    smiles, drug_idx = np.unique(df["smiles"].astype(str).to_numpy(), return_inverse=True)
    targets, target_idx = np.unique(df["target"].astype(str).to_numpy(), return_inverse=True)
    sequences = None
    if "sequence" in df.columns:
        seq_of = df.groupby(df["target"].astype(str))["sequence"].first()
        sequences = [str(seq_of[t]) if isinstance(seq_of[t], str) else "" for t in targets]
    split = None
    if "split" in df.columns:
        split = df["split"].astype(str).str.strip().str.lower().to_numpy(dtype=object)
        wrong = np.flatnonzero(~np.isin(split, ["train", "test"]))
        if wrong.size:
            raise MoleculeError(f"{path}: column 'split' row {wrong[0] + 2}: expected 'train' or 'test', "
                                f"found {df['split'].iloc[wrong[0]]!r}")
    return DTITable(list(smiles), list(targets), sequences, drug_idx.astype(np.int64),
                    target_idx.astype(np.int64), value, split, source=str(path), activity_types=types)


def murcko_scaffold(smiles: str) -> str:
    """Canonical Bemis-Murcko scaffold SMILES ('' for acyclic molecules); MoleculeError if unparsable."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise MoleculeError(f"SMILES {smiles!r} is not parseable")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def _group_mask(groups: np.ndarray, test_fraction: float, rng: np.random.Generator,
                largest_first: bool = False) -> np.ndarray:
    """Test mask (over groups' members) taking whole groups until ~test_fraction of the members are test."""
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(names))
    if largest_first:  # scaffold split as in MoleculeNet: big scaffolds to train, small ones to test
        order = order[np.argsort(-counts[order], kind="stable")][::-1]
    chosen = np.zeros(len(names), dtype=bool)
    n_test, target = 0, test_fraction * len(groups)
    for g in order:
        if n_test >= target:
            break
        chosen[g] = True
        n_test += counts[g]
    if chosen.all():  # keep at least one group for training
        chosen[order[-1]] = False
    return chosen[inverse]


def split_mask(table: DTITable, split: str = "random", test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean test mask over the pairs of ``table`` for one of SPLITS (train = ~mask)."""
    rng = np.random.default_rng(seed)
    n = len(table)
    if split == "random":
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[: int(round(test_fraction * n))]] = True
        return mask
    if split == "cold-drug":
        return _group_mask(table.drug_idx, test_fraction, rng)
    if split == "cold-target":
        return _group_mask(table.target_idx, test_fraction, rng)
    if split == "scaffold":
        scaffolds = np.array([murcko_scaffold(s) for s in table.smiles], dtype=object)
        return _group_mask(scaffolds[table.drug_idx], test_fraction, rng, largest_first=True)
    raise MoleculeError(f"split: expected one of {SPLITS}, found {split!r}")
