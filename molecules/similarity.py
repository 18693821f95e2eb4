"""Morgan fingerprints (radius 2, 2048 bits) and Tanimoto similarity search over compound tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator

from fusion.errors import MoleculeError

__all__ = ["morgan_fingerprints", "fingerprint_array", "tanimoto_matrix", "similarity_search",
           "packed_fingerprints", "tanimoto_packed", "N_BITS"]

N_BITS = 2048


def _as_mol(item: Chem.Mol | str, where: str) -> Chem.Mol:
    if isinstance(item, Chem.Mol):
        return item
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(item) if isinstance(item, str) else None
    if mol is None:
        raise MoleculeError(f"{where}: SMILES {item!r} is not parseable")
    return mol


def morgan_fingerprints(
    molecules: Sequence[Chem.Mol | str], *, radius: int = 2, n_bits: int = 2048
) -> list[DataStructs.ExplicitBitVect]:
    """Morgan (ECFP4-like at radius 2) bit fingerprints of molecules or SMILES."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return [generator.GetFingerprint(_as_mol(m, f"molecule {i}")) for i, m in enumerate(molecules)]


def fingerprint_array(fps: Sequence[DataStructs.ExplicitBitVect]) -> np.ndarray:
    """Fingerprints as a (n_molecules, n_bits) uint8 array of 0/1, for ML models."""
    if len(fps) == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    out = np.zeros((len(fps), fps[0].GetNumBits()), dtype=np.uint8)
    for row, fp in zip(out, fps):
        DataStructs.ConvertToNumpyArray(fp, row)
    return out


def tanimoto_matrix(
    fps_a: Sequence[DataStructs.ExplicitBitVect], fps_b: Sequence[DataStructs.ExplicitBitVect]
) -> np.ndarray:
    """Tanimoto similarity (0-1) between every fingerprint of ``fps_a`` (rows) and ``fps_b`` (columns)."""
    fps_b = list(fps_b)
    out = np.zeros((len(fps_a), len(fps_b)), dtype=float)
    for i, fp in enumerate(fps_a):
        if fps_b:
            out[i] = DataStructs.BulkTanimotoSimilarity(fp, fps_b)
    return out


def similarity_search(
    query_smiles: str, table: pd.DataFrame, top: int = 10, *, smiles_col: str = "canonical_smiles"
) -> pd.DataFrame:
    """The ``top`` distinct compounds of ``table`` most similar to the query, with a ``tanimoto`` column (0-1)."""
    if smiles_col not in table.columns:
        raise MoleculeError(f"compound table: missing column {smiles_col!r} (found {list(table.columns)})")
    query = morgan_fingerprints([_as_mol(query_smiles, "query")])[0]
    unique = table.drop_duplicates(subset=smiles_col)
    fps = morgan_fingerprints(list(unique[smiles_col]))
    out = unique.assign(tanimoto=tanimoto_matrix([query], fps)[0] if fps else np.zeros(0))
    return out.sort_values("tanimoto", ascending=False, kind="stable").head(top).reset_index(drop=True)


def packed_fingerprints(smiles: Sequence[str], *, radius: int = 2, n_bits: int = N_BITS) -> np.ndarray:
    """Morgan bit fingerprints packed 8 bits a byte: uint8 [n_molecules, n_bits / 8] (MoleculeError if unparsable)."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits // 8), dtype=np.uint8)
    for i, smi in enumerate(smiles):
        out[i] = np.packbits(generator.GetFingerprintAsNumPy(_as_mol(smi, f"molecule {i}")).astype(np.uint8))
    return out


def tanimoto_packed(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Tanimoto (0-1) of one packed fingerprint [n_bytes] against a packed library [n, n_bytes], by popcount."""
    q = np.ascontiguousarray(query, dtype=np.uint8).reshape(-1)
    lib = np.ascontiguousarray(library, dtype=np.uint8)
    if lib.ndim != 2 or lib.shape[1] != q.shape[0] or q.shape[0] % 8:
        raise MoleculeError(f"packed fingerprints: query has {q.shape[0]} bytes, library shape {lib.shape}")
    q64, lib64 = q.view(np.uint64), lib.view(np.uint64)
    both = np.bitwise_count(lib64 & q64).sum(axis=1, dtype=np.int64)
    either = np.bitwise_count(lib64 | q64).sum(axis=1, dtype=np.int64)
    return np.divide(both, either, out=np.zeros(len(lib), dtype=float), where=either > 0)
