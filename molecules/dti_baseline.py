"""The classical DTI baseline: gradient-boosted trees on Morgan fingerprints (drug) + k-mer composition (target).

It sees each pair's structures only; the model over the measured affinities around a pair (SimBoost-style
profile features) is ``molecules.dti_profile.ProfileGBT``.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import HistGradientBoostingRegressor

from fusion.errors import MoleculeError
from molecules.dti_data import DTITable
from molecules.dti_profile import matrix_completion
from molecules.protein import kmer_composition

__all__ = ["morgan_bits", "pair_features", "fit_predict_baseline", "GBTBaseline", "matrix_completion"]


def morgan_bits(smiles: list[str], radius: int = 2, n_bits: int = 1024) -> np.ndarray:
    """Morgan (ECFP4 for radius 2) bit vectors (n, n_bits) uint8."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    for i, s in enumerate(smiles):
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise MoleculeError(f"smiles[{i}]: SMILES {s!r} is not parseable")
        DataStructs.ConvertToNumpyArray(gen.GetFingerprint(mol), out[i])
    return out


def pair_features(table: DTITable, n_bits: int = 256) -> np.ndarray:
    """(n_pairs, n_bits + 420 [+ n_targets]) float32: drug bits, target k-mer composition, or target one-hot."""
    drug = morgan_bits(table.smiles, n_bits=n_bits).astype(np.float32)
    if table.sequences is not None and all(table.sequences):
        target = kmer_composition(table.sequences).numpy()
    else:
        target = np.eye(len(table.targets), dtype=np.float32)
    return np.concatenate([drug[table.drug_idx], target[table.target_idx]], axis=1)


class GBTBaseline:
    """HistGradientBoosting on pair_features; fit on one table, predict pairs of subsets of it."""

    def __init__(self, seed: int = 0, max_iter: int = 200):
        self.model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=63,
                                                   early_stopping=False, random_state=seed)
        self._fitted = False

    def fit(self, train: DTITable) -> "GBTBaseline":
        self.model.fit(pair_features(train), train.value)
        self._fitted = True
        return self

    def predict(self, table: DTITable) -> np.ndarray:
        """Predictions (n_pairs,) for pairs of a table sharing the training table's drug and target lists."""
        if not self._fitted:
            raise MoleculeError("GBT baseline: predict before fit")
        return self.model.predict(pair_features(table))


def fit_predict_baseline(train: DTITable, test: DTITable, seed: int = 0, max_iter: int = 200) -> np.ndarray:
    """Fit HistGradientBoosting on the train pairs and predict the test pairs (same units as value).

    ``train`` and ``test`` must share their drug and target lists (``DTITable.subset`` of one table).
    """
    return GBTBaseline(seed, max_iter).fit(train).predict(test)
