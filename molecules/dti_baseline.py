"""Classical DTI baselines: gradient-boosted trees on Morgan fingerprints (drug) + k-mer composition (target),
optionally with SimBoost-style affinity-profile features (He et al., J Cheminform 2017).

Profile features are the drug's and the target's mean training affinity, whether each was seen in
training, and a low-rank matrix-completion estimate of the pair (rank-``MF_RANK`` iterative SVD of the
drugs x targets training matrix, missing cells imputed; SimBoost's matrix-factorisation feature). For a training pair they are computed out of fold (5 folds of the training pairs: the means
of the other folds), so the trees cannot read a pair's label from its own features (a leave-one-out
mean would leak it: within one drug it falls as the pair's own value rises); a drug or target unseen
in training gets the global mean and a 0 flag (cold splits).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import HistGradientBoostingRegressor

from fusion.errors import MoleculeError
from molecules.dti_data import DTITable
from molecules.protein import kmer_composition

__all__ = ["morgan_bits", "pair_features", "fit_predict_baseline", "GBTBaseline", "matrix_completion"]

MF_RANK = 8
MF_ITERATIONS = 30


def matrix_completion(table: DTITable, rank: int = MF_RANK, iterations: int = MF_ITERATIONS) -> np.ndarray:
    """(n_drugs, n_targets) estimate of every pair from the table's pairs: start from mean + drug + target
    offsets, then repeatedly replace the unmeasured cells by the rank-``rank`` SVD reconstruction."""
    n_d, n_t = len(table.smiles), len(table.targets)
    mu = float(table.value.mean()) if len(table) else 0.0
    known = np.zeros((n_d, n_t), dtype=bool)
    known[table.drug_idx, table.target_idx] = True
    y = np.zeros((n_d, n_t))
    y[table.drug_idx, table.target_idx] = table.value
    cnt_d, cnt_t = known.sum(1), known.sum(0)
    d_off = np.divide((y - mu * known).sum(1), cnt_d, out=np.zeros(n_d), where=cnt_d > 0)
    t_off = np.divide((y - mu * known).sum(0), cnt_t, out=np.zeros(n_t), where=cnt_t > 0)
    filled = np.where(known, y, mu + d_off[:, None] + t_off[None, :])
    for _ in range(iterations):
        u, s, vt = np.linalg.svd(filled - mu, full_matrices=False)
        low = mu + (u[:, :rank] * s[:rank]) @ vt[:rank]
        filled = np.where(known, y, low)
    return low


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
    """HistGradientBoosting on pair_features [+ profile features]; fit on one table, predict subsets of it."""

    def __init__(self, seed: int = 0, max_iter: int = 200, profile: bool = False):
        self.model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=63,
                                                   early_stopping=False, random_state=seed)
        self.profile = profile
        self._stats: tuple[np.ndarray, ...] | None = None

    @staticmethod
    def _stats_of(table: DTITable) -> tuple[np.ndarray, ...]:
        n_d, n_t = len(table.smiles), len(table.targets)
        return (np.bincount(table.drug_idx, table.value, n_d), np.bincount(table.drug_idx, minlength=n_d),
                np.bincount(table.target_idx, table.value, n_t), np.bincount(table.target_idx, minlength=n_t),
                float(table.value.mean()), matrix_completion(table))

    @staticmethod
    def _profile(table: DTITable, stats: tuple[np.ndarray, ...]) -> np.ndarray:
        """(n_pairs, 5): drug mean, target mean (from ``stats``), drug seen, target seen, matrix completion."""
        d_sum, d_n, t_sum, t_n, mu, mf = stats
        d_c, t_c = d_n[table.drug_idx].astype(float), t_n[table.target_idx].astype(float)
        d_mean = np.divide(d_sum[table.drug_idx], d_c, out=np.full(len(table), mu), where=d_c > 0)
        t_mean = np.divide(t_sum[table.target_idx], t_c, out=np.full(len(table), mu), where=t_c > 0)
        return np.column_stack([d_mean, t_mean, d_c > 0, t_c > 0,
                                mf[table.drug_idx, table.target_idx]]).astype(np.float32)

    def _train_profile(self, train: DTITable, folds: int = 5) -> np.ndarray:
        """Out-of-fold profile features of the training pairs."""
        fold = np.random.default_rng(0).integers(0, folds, len(train))
        out = np.zeros((len(train), 5), dtype=np.float32)
        for k in range(folds):
            inside = fold == k
            out[inside] = self._profile(train.subset(inside), self._stats_of(train.subset(~inside)))
        return out

    def fit(self, train: DTITable) -> "GBTBaseline":
        self._stats = self._stats_of(train)
        x = pair_features(train)
        if self.profile:
            x = np.concatenate([x, self._train_profile(train)], axis=1)
        self.model.fit(x, train.value)
        return self

    def predict(self, table: DTITable) -> np.ndarray:
        """Predictions (n_pairs,) for pairs of a table sharing the training table's drug and target lists."""
        if self._stats is None:
            raise MoleculeError("GBT baseline: predict before fit")
        x = pair_features(table)
        if self.profile:
            x = np.concatenate([x, self._profile(table, self._stats)], axis=1)
        return self.model.predict(x)


def fit_predict_baseline(train: DTITable, test: DTITable, seed: int = 0, max_iter: int = 200) -> np.ndarray:
    """Fit HistGradientBoosting on the train pairs and predict the test pairs (same units as value).

    ``train`` and ``test`` must share their drug and target lists (``DTITable.subset`` of one table).
    """
    return GBTBaseline(seed, max_iter).fit(train).predict(test)
