"""Morgan fingerprints and Tanimoto similarity."""

import numpy as np
import pandas as pd
import pytest

from fusion.errors import MoleculeError
from molecules.similarity import fingerprint_array, morgan_fingerprints, similarity_search, tanimoto_matrix

GEFITINIB = "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1"
ERLOTINIB = "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1c(=O)c2c(ncn2C)n(C)c1=O"


def test_self_similarity_is_one_and_matrix_symmetric():
    fps = morgan_fingerprints([GEFITINIB, ERLOTINIB, ASPIRIN])
    sim = tanimoto_matrix(fps, fps)
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)
    assert ((sim >= 0) & (sim <= 1)).all()


def test_gefitinib_closer_to_erlotinib_than_to_aspirin():
    g, e, a = morgan_fingerprints([GEFITINIB, ERLOTINIB, ASPIRIN])
    sim = tanimoto_matrix([g], [e, a])[0]
    assert sim[0] > sim[1] + 0.2


def test_tanimoto_by_hand_from_bits():
    fps = morgan_fingerprints(["CCO", "CCN", "c1ccccc1"])
    bits = fingerprint_array(fps).astype(bool)
    assert bits.shape == (3, 2048)
    expected = np.array([[(bits[i] & bits[j]).sum() / (bits[i] | bits[j]).sum() for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(tanimoto_matrix(fps, fps), expected)
    # benzene has 3 distinct environments (atom, radius-1, radius-2) by symmetry
    assert bits[2].sum() == 3


def test_similarity_search_ranks_and_deduplicates():
    table = pd.DataFrame({
        "compound_id": ["asp", "erl", "erl", "caf"],
        "target_gene": ["PTGS1", "EGFR", "ERBB2", "ADORA1"],
        "canonical_smiles": [ASPIRIN, ERLOTINIB, ERLOTINIB, CAFFEINE],
    })
    hits = similarity_search(GEFITINIB, table, top=2)
    assert len(hits) == 2 and hits.loc[0, "compound_id"] == "erl"
    g, a, c = morgan_fingerprints([GEFITINIB, ASPIRIN, CAFFEINE])
    runner_up = tanimoto_matrix([g], [a, c])[0]
    assert hits.loc[1, "compound_id"] == ("asp", "caf")[int(runner_up.argmax())]
    assert hits.loc[1, "tanimoto"] == pytest.approx(runner_up.max())
    assert hits["tanimoto"].is_monotonic_decreasing
    exact = similarity_search(ASPIRIN, table, top=10)
    assert exact.loc[0, "compound_id"] == "asp" and exact.loc[0, "tanimoto"] == pytest.approx(1.0)
    assert len(exact) == 3


def test_bad_query_is_a_molecule_error():
    with pytest.raises(MoleculeError, match="query"):
        similarity_search("C1CC(", pd.DataFrame({"canonical_smiles": [ASPIRIN]}))


def test_packed_popcount_tanimoto_equals_rdkit_bulk_tanimoto():
    from rdkit import DataStructs

    from molecules.similarity import packed_fingerprints, tanimoto_packed

    library = [GEFITINIB, ERLOTINIB, ASPIRIN, CAFFEINE, "CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1"]
    packed = packed_fingerprints(library)
    assert packed.shape == (len(library), 256) and packed.dtype == np.uint8
    fps = morgan_fingerprints(library)
    for i, fp in enumerate(fps):
        np.testing.assert_allclose(tanimoto_packed(packed[i], packed), DataStructs.BulkTanimotoSimilarity(fp, fps))
    # packing keeps the bit order of the RDKit fingerprint
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1), fingerprint_array(fps))
    with pytest.raises(MoleculeError, match="packed fingerprints"):
        tanimoto_packed(packed[0][:100], packed)
