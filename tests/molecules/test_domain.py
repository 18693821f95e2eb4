"""Applicability domain: Tanimoto of a known pair counted by hand from its Morgan bits, and the nearest
training compound on the same target versus on any target."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from molecules.domain import DOMAIN_TANIMOTO, nearest_training_similarity, tanimoto_packed_matrix
from molecules.similarity import packed_fingerprints

BENZOIC = "OC(=O)c1ccccc1"
TOLUIC = "Cc1ccc(C(=O)O)cc1"
HEXANE = "CCCCCC"


def _bits(smiles: str) -> set[int]:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return set(gen.GetFingerprint(Chem.MolFromSmiles(smiles)).GetOnBits())


def test_tanimoto_of_benzoic_and_toluic_acid_equals_the_hand_count():
    a, b = _bits(BENZOIC), _bits(TOLUIC)
    by_hand = len(a & b) / len(a | b)  # |A and B| / |A or B| over the on-bits
    m = tanimoto_packed_matrix(packed_fingerprints([BENZOIC, HEXANE]), packed_fingerprints([TOLUIC, BENZOIC]))
    assert m[0, 0] == pytest.approx(by_hand)
    assert 0.3 < by_hand < 0.8
    assert m[0, 1] == 1.0 and m[1, 1] == 0.0  # identical; hexane shares no bit with benzoic acid


def test_nearest_training_compound_per_target_and_any_target():
    train_smiles = [BENZOIC, HEXANE, TOLUIC]
    train_targets = ["T1", "T2", "T2"]
    dom = nearest_training_similarity([BENZOIC, BENZOIC, HEXANE], ["T1", "T2", "T3"], train_smiles, train_targets)
    toluic = tanimoto_packed_matrix(packed_fingerprints([BENZOIC]), packed_fingerprints([TOLUIC]))[0, 0]
    assert dom["nn_tanimoto_target"].tolist() == pytest.approx([1.0, toluic, 0.0])  # T3 has no training compound
    assert dom["nn_tanimoto_any"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert dom["in_domain"].tolist() == [True, bool(toluic >= DOMAIN_TANIMOTO), False]
    assert np.all((dom["nn_tanimoto_target"] <= dom["nn_tanimoto_any"]))
