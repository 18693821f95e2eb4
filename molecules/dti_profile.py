"""Affinity-profile features of drug-target pairs and the gradient-boosting model over them.

SimBoost (He et al., J Cheminform 2017) showed that on dense kinase panels such as Davis a pair's
affinity is best predicted from the measured affinities around it. From the training pairs of a table,
read as a drugs x targets matrix with a mask of measured cells, each pair (d, t) gets (``FEATURE_NAMES``):

  - the drug's and the target's mean and standard deviation, and whether each was measured at all;
  - low-rank matrix-completion estimates of the cell (ranks ``RANKS``; iterative SVD imputation);
  - neighbour estimates, for k in ``NEIGHBOURS``: the similarity-weighted mean of Y[d', t] over the k drugs
    d' most similar to d that were measured on t, with the top neighbour's similarity and value; the same
    over targets (Y[d, t'] for the targets t' most similar to t). Similarity is the cosine of the centred
    training profiles over co-measured cells ("profile"), and for new drugs and targets the Tanimoto of
    Morgan bits ("chemical", drugs) and the cosine of k-mer compositions ("sequence", targets).

``CHEMISTRY_NAMES`` carry over to a drug never measured (cold-drug and scaffold splits, where every drug
feature above is missing): the chemical neighbours' values on the target (k = 10, and a kernel mean over
every measured drug with weights Tanimoto^3), their values minus their own means (the target's residual
among similar chemistry), the chemical neighbours' drug means and spreads (how promiscuous similar
compounds are), the nearest measured drug's Tanimoto, and RDKit descriptors (``molecules.properties``).

Training pairs get out-of-fold features (``out_of_fold``: folds of the training pairs, each fold's features
computed from the other folds), so a pair's own value never enters its features; pairs to predict get
features from all training pairs. For models that will meet new drugs the folds hold whole drugs or whole
scaffolds (``pair_groups``): a training pair then sees what a new drug's pair sees (no profile of its own
drug), so the trees learn to lean on chemistry instead of drug statistics that a new drug lacks. A drug or
target with no usable neighbour gets NaN, which the trees route as missing. Everything is numpy over the
(n_drugs, n_targets) matrix: Davis (68 x 442) takes seconds.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator
from sklearn.ensemble import HistGradientBoostingRegressor

from fusion.errors import MoleculeError
from molecules.dti_data import DTITable, murcko_scaffold
from molecules.properties import DESCRIPTOR_COLUMNS, descriptors
from molecules.protein import kmer_composition

__all__ = ["ALL_NAMES", "CHEMISTRY_NAMES", "FEATURE_NAMES", "GROUPINGS", "NEIGHBOURS", "RANKS", "ProfileFeatures",
           "ProfileGBT", "matrix_completion", "out_of_fold", "pair_groups", "profile_similarity"]

RANKS = (4, 8, 16)
MF_ITERATIONS = 30
NEIGHBOURS = (3, 10)
_KNN = ("mean", "top_sim", "top_value")
FEATURE_NAMES: tuple[str, ...] = (
    ("drug_mean", "target_mean", "drug_sd", "target_sd", "drug_seen", "target_seen")
    + tuple(f"mf_rank{r}" for r in RANKS)
    + tuple(f"{side}_profile_k{k}_{s}" for k in NEIGHBOURS for side in ("drug", "target") for s in _KNN)
    + tuple(f"drug_chemical_k3_{s}" for s in _KNN) + tuple(f"target_sequence_k3_{s}" for s in _KNN)
)
CHEMISTRY_NAMES: tuple[str, ...] = (
    ("drug_chemical_k10_mean", "drug_chemical_kernel_mean", "drug_chemical_residual_k10_mean",
     "drug_chemical_drug_mean", "drug_chemical_drug_sd", "drug_nearest_tanimoto")
    + tuple(f"drug_{c}" for c in DESCRIPTOR_COLUMNS)
)
ALL_NAMES = FEATURE_NAMES + CHEMISTRY_NAMES
GROUPINGS = (None, "drug", "scaffold")  # out-of-fold folds: random pairs, whole drugs, whole scaffolds


def _matrix(table: DTITable) -> tuple[np.ndarray, np.ndarray]:
    """(values, measured) as (n_drugs, n_targets) float and bool matrices; a repeated pair keeps its mean."""
    shape = (len(table.smiles), len(table.targets))
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (table.drug_idx, table.target_idx), table.value)
    np.add.at(count, (table.drug_idx, table.target_idx), 1.0)
    known = count > 0
    return np.divide(total, count, out=np.zeros(shape), where=known), known


def _complete(y: np.ndarray, known: np.ndarray, rank: int, iterations: int) -> np.ndarray:
    """Rank-``rank`` estimate of every cell: mean + drug + target offsets, then SVD imputation of the unmeasured."""
    if not known.any():
        return np.zeros_like(y)
    mu = float(y[known].mean())
    cnt_d, cnt_t = known.sum(1), known.sum(0)
    d_off = np.divide(((y - mu) * known).sum(1), cnt_d, out=np.zeros(len(y)), where=cnt_d > 0)
    t_off = np.divide(((y - mu) * known).sum(0), cnt_t, out=np.zeros(y.shape[1]), where=cnt_t > 0)
    filled = np.where(known, y, mu + d_off[:, None] + t_off[None, :])
    low = filled
    for _ in range(iterations):
        u, s, vt = np.linalg.svd(filled - mu, full_matrices=False)
        low = mu + (u[:, :rank] * s[:rank]) @ vt[:rank]
        filled = np.where(known, y, low)
    return low


def matrix_completion(table: DTITable, rank: int = 8, iterations: int = MF_ITERATIONS) -> np.ndarray:
    """(n_drugs, n_targets) estimate of every pair from the table's pairs: start from mean + drug + target
    offsets, then repeatedly replace the unmeasured cells by the rank-``rank`` SVD reconstruction."""
    y, known = _matrix(table)
    return _complete(y, known, rank, iterations)


def profile_similarity(y: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(n_rows, n_rows) cosine of the rows' centred values over the columns both rows measured; 0 on the
    diagonal and for rows sharing no measured column."""
    cnt = known.sum(1)
    mean = np.divide((y * known).sum(1), cnt, out=np.zeros(len(y)), where=cnt > 0)
    c = np.where(known, y - mean[:, None], 0.0)
    sq = (c ** 2) @ known.T.astype(np.float64)  # sq[i, j]: row i's squares over the columns row j measured
    den = np.sqrt(sq * sq.T)
    sim = np.divide(c @ c.T, den, out=np.zeros((len(y), len(y))), where=den > 1e-12)
    np.fill_diagonal(sim, 0.0)
    return sim


def _neighbours(y: np.ndarray, known: np.ndarray, sim: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                k: int) -> np.ndarray:
    """(n, 3) for query cells (rows, cols): weighted mean of y[r', c] over the k rows r' most similar to r
    measured in column c (weights = positive similarity), the top similarity and the top neighbour's value.
    NaN where no measured row has a positive similarity."""
    out = np.full((len(rows), 3), np.nan)
    for c in np.unique(cols):
        query = np.flatnonzero(cols == c)
        avail = np.flatnonzero(known[:, c])
        if avail.size == 0:
            continue
        s = sim[rows[query]][:, avail]
        kk = min(k, avail.size)
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        s_top = np.take_along_axis(s, top, 1)
        v_top = y[avail[top], c]
        w = np.clip(s_top, 0.0, None)
        best = np.argmax(s_top, 1)
        ok = w.sum(1) > 0
        pick = np.arange(len(query))
        out[query[ok], 0] = (w[ok] * v_top[ok]).sum(1) / w[ok].sum(1)
        out[query[ok], 1] = s_top[pick, best][ok]
        out[query[ok], 2] = v_top[pick, best][ok]
    return out


def _tanimoto(smiles: list[str]) -> np.ndarray:
    """(n, n) Tanimoto of Morgan radius-2 2048-bit fingerprints, 0 on the diagonal."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = []
    for i, s in enumerate(smiles):
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise MoleculeError(f"smiles[{i}]: SMILES {s!r} is not parseable")
        fps.append(gen.GetFingerprint(mol))
    sim = np.array([DataStructs.BulkTanimotoSimilarity(f, fps) for f in fps]).reshape(len(fps), len(fps))
    np.fill_diagonal(sim, 0.0)
    return sim


def _sequence_similarity(sequences: list[str] | None, n_targets: int) -> np.ndarray | None:
    """(n, n) cosine of k-mer compositions, 0 on the diagonal; None without a sequence for every target."""
    if sequences is None or len(sequences) != n_targets or not all(sequences):
        return None
    km = kmer_composition(sequences).numpy().astype(np.float64)
    km /= np.maximum(np.linalg.norm(km, axis=1, keepdims=True), 1e-12)
    sim = km @ km.T
    np.fill_diagonal(sim, 0.0)
    return sim


def _descriptor_matrix(smiles: list[str]) -> np.ndarray:
    """(n, len(DESCRIPTOR_COLUMNS)) float64 RDKit descriptors of the drugs (molecules.properties)."""
    out = np.zeros((len(smiles), len(DESCRIPTOR_COLUMNS)))
    for i, s in enumerate(smiles):
        try:
            row = descriptors(s)
        except MoleculeError as exc:
            raise MoleculeError(f"smiles[{i}]: {exc}") from None
        out[i] = [row[c] for c in DESCRIPTOR_COLUMNS]
    return out


def _kernel_mean(y: np.ndarray, known: np.ndarray, sim: np.ndarray, power: float = 3.0) -> np.ndarray:
    """(n_rows, n_cols): mean of y[r', c] over every row r' measured in column c, weights max(sim[r, r'], 0)^power;
    NaN where no measured row has a positive weight."""
    w = np.clip(sim, 0.0, None) ** power
    num, den = w @ np.where(known, y, 0.0), w @ known.astype(np.float64)
    return np.divide(num, den, out=np.full(y.shape, np.nan), where=den > 1e-12)


def pair_groups(table: DTITable, by: str | None) -> np.ndarray | None:
    """Per pair, the group that out-of-fold folds keep whole: its drug index ('drug'), its drug's Bemis-Murcko
    scaffold ('scaffold'), or None (random pairs)."""
    if by is None:
        return None
    if by == "drug":
        return table.drug_idx
    if by == "scaffold":
        scaffolds = np.array([murcko_scaffold(s) for s in table.smiles], dtype=object)
        return np.unique(scaffolds, return_inverse=True)[1][table.drug_idx]
    raise MoleculeError(f"profile folds: group_by expected one of {GROUPINGS}, found {by!r}")


class ProfileFeatures:
    """The ALL_NAMES (FEATURE_NAMES + CHEMISTRY_NAMES) of any pair of a table, from the measured pairs of ``train``.

    ``chemical`` / ``sequence`` / ``descriptor``: precomputed (n_drugs, n_drugs) Tanimoto, (n_targets, n_targets)
    sequence similarity and (n_drugs, len(DESCRIPTOR_COLUMNS)) descriptors over the table's whole drug and target
    lists (``out_of_fold`` shares them between folds); computed when None. A pair's features depend on the
    training pairs and on the pair's drug and target only: never on the values or the other pairs of the table
    passed to ``transform``.
    """

    def __init__(self, train: DTITable, chemical: np.ndarray | None = None, sequence: np.ndarray | None = None,
                 descriptor: np.ndarray | None = None):
        self.y, self.known = _matrix(train)
        self.chemical = _tanimoto(train.smiles) if chemical is None else chemical
        self.sequence = _sequence_similarity(train.sequences, len(train.targets)) if sequence is None else sequence
        self.descriptor = _descriptor_matrix(train.smiles) if descriptor is None else descriptor
        y, known = self.y, self.known
        cnt_d, cnt_t = known.sum(1), known.sum(0)
        mu = float(y[known].mean()) if known.any() else 0.0
        self.drug_mean = np.divide((y * known).sum(1), cnt_d, out=np.full(len(y), mu), where=cnt_d > 0)
        self.target_mean = np.divide((y * known).sum(0), cnt_t, out=np.full(y.shape[1], mu), where=cnt_t > 0)
        var_d = np.divide((((y - self.drug_mean[:, None]) ** 2) * known).sum(1), cnt_d, out=np.zeros(len(y)),
                          where=cnt_d > 0)
        var_t = np.divide((((y - self.target_mean[None]) ** 2) * known).sum(0), cnt_t, out=np.zeros(y.shape[1]),
                          where=cnt_t > 0)
        self.drug_sd, self.target_sd = np.sqrt(var_d), np.sqrt(var_t)
        self.completed = [_complete(y, known, r, MF_ITERATIONS) for r in RANKS]
        self.drug_sim = profile_similarity(y, known)
        self.target_sim = profile_similarity(y.T, known.T)
        # chemistry: what a drug without measurements inherits from the measured drugs most like it
        seen = known.any(1)
        self.kernel = _kernel_mean(y, known, self.chemical)
        drugs = np.arange(len(y))
        stats = [_neighbours(v[:, None], seen[:, None], self.chemical, drugs, np.zeros(len(y), dtype=np.int64), 5)
                 for v in (self.drug_mean, self.drug_sd)]
        self.drug_stats = np.column_stack([stats[0][:, 0], stats[1][:, 0]])
        self.nearest = (np.where(seen[None, :], self.chemical, 0.0).max(1) if seen.any()
                        else np.zeros(len(y)))

    def transform(self, table: DTITable) -> np.ndarray:
        """(n_pairs, len(ALL_NAMES)) float32 features of the table's pairs (same drug / target lists)."""
        if (len(table.smiles), len(table.targets)) != self.y.shape:
            raise MoleculeError(f"{table.source or 'DTI table'}: {len(table.smiles)} drugs x {len(table.targets)} "
                                f"targets, the profile was built on {self.y.shape[0]} x {self.y.shape[1]}; "
                                "use subsets of one table")
        d, t = table.drug_idx, table.target_idx
        y, known = self.y, self.known
        cols = [self.drug_mean[d], self.target_mean[t], self.drug_sd[d], self.target_sd[t],
                known.any(1)[d], known.any(0)[t]] + [c[d, t] for c in self.completed]
        for k in NEIGHBOURS:
            cols += list(_neighbours(y, known, self.drug_sim, d, t, k).T)
            cols += list(_neighbours(y.T, known.T, self.target_sim, t, d, k).T)
        cols += list(_neighbours(y, known, self.chemical, d, t, 3).T)
        seq = (_neighbours(y.T, known.T, self.sequence, t, d, 3) if self.sequence is not None
               else np.full((len(table), 3), np.nan))
        cols += list(seq.T)
        residual = np.where(known, y - self.drug_mean[:, None], 0.0)
        cols += [_neighbours(y, known, self.chemical, d, t, 10)[:, 0], self.kernel[d, t],
                 _neighbours(residual, known, self.chemical, d, t, 10)[:, 0],
                 self.drug_stats[d, 0], self.drug_stats[d, 1], self.nearest[d]]
        cols += list(self.descriptor[d].T)
        return np.column_stack(cols).astype(np.float32)


def out_of_fold(train: DTITable, folds: int = 5, seed: int = 0, chemical: np.ndarray | None = None,
                sequence: np.ndarray | None = None, groups: np.ndarray | None = None,
                descriptor: np.ndarray | None = None) -> np.ndarray:
    """(n_pairs, len(ALL_NAMES)) features of the training pairs, each fold's from the other folds only
    (``chemical`` / ``sequence`` / ``descriptor`` as in ProfileFeatures). ``groups`` (n_pairs,): pairs of one
    group share a fold (``pair_groups``: whole drugs or scaffolds), None: every pair drawn alone."""
    if folds < 2 or len(train) < folds:
        raise MoleculeError(f"profile features: need at least {max(folds, 2)} training pairs and 2 folds, "
                            f"got {len(train)} pairs and {folds} folds")
    rng = np.random.default_rng(seed)
    if groups is None:
        fold = rng.integers(0, folds, len(train))
    else:
        names, inverse = np.unique(np.asarray(groups), return_inverse=True)
        if len(names) < folds:
            raise MoleculeError(f"profile features: {len(names)} groups cannot fill {folds} folds; "
                                "use fewer folds or group_by=None")
        fold = (rng.permutation(len(names)) % folds)[inverse]
    chemical = _tanimoto(train.smiles) if chemical is None else chemical
    if sequence is None:
        sequence = _sequence_similarity(train.sequences, len(train.targets))
    descriptor = _descriptor_matrix(train.smiles) if descriptor is None else descriptor
    out = np.zeros((len(train), len(ALL_NAMES)), dtype=np.float32)
    for k in range(folds):
        inside = fold == k
        if inside.any():
            out[inside] = ProfileFeatures(train.subset(~inside), chemical, sequence,
                                          descriptor).transform(train.subset(inside))
    return out


class ProfileGBT:
    """HistGradientBoosting on the profile features: fit on one table, predict pairs of subsets of it.

    ``group_by`` (GROUPINGS): how the out-of-fold folds of the training pairs are drawn; 'drug' or 'scaffold'
    for a model that will predict new drugs (cold-drug / scaffold splits), None for new pairs of known drugs.
    ``chemistry``: whether the trees see CHEMISTRY_NAMES besides FEATURE_NAMES.
    """

    def __init__(self, seed: int = 0, max_iter: int = 1000, learning_rate: float = 0.03, folds: int = 5,
                 group_by: str | None = None, chemistry: bool = False):
        if group_by not in GROUPINGS:
            raise MoleculeError(f"profile GBT: group_by expected one of {GROUPINGS}, found {group_by!r}")
        self.model = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=learning_rate,
                                                   max_leaf_nodes=63, early_stopping=False, random_state=seed)
        self.seed, self.folds, self.group_by, self.chemistry = seed, folds, group_by, chemistry
        self.features: ProfileFeatures | None = None
        n = len(ALL_NAMES) if chemistry else len(FEATURE_NAMES)
        self.columns = np.arange(len(ALL_NAMES)) < n  # the features the trees were given

    def fit(self, train: DTITable) -> "ProfileGBT":
        self.features = ProfileFeatures(train)
        f = self.features
        x = out_of_fold(train, self.folds, self.seed, f.chemical, f.sequence, pair_groups(train, self.group_by),
                        f.descriptor)
        self.columns &= ~np.isnan(x).all(0)  # e.g. the sequence neighbours of a table without sequences
        self.model.fit(x[:, self.columns], train.value)
        return self

    def predict(self, table: DTITable) -> np.ndarray:
        """Predictions (n_pairs,) in the training units."""
        if self.features is None:
            raise MoleculeError("profile GBT: predict before fit")
        return self.model.predict(self.features.transform(table)[:, self.columns])
