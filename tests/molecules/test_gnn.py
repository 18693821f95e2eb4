"""The molecule GNN learns a computable property (Crippen logP) of RDKit's shipped NCI molecules."""

import os

import numpy as np
import pytest
from rdkit import Chem, RDConfig
from rdkit.Chem import Crippen

from fusion.errors import MoleculeError
from molecules.gnn import MoleculeGNN, cross_validate_gnn, embed, fit_molecule_gnn, predict
from molecules.graph import EDGE_DIM, NODE_DIM, mol_to_graph, smiles_to_graphs

NCI_SMILES = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nci_logp():
    """First 500 parseable multi-atom NCI molecules as graphs, with their Crippen logP."""
    mols = []
    with open(NCI_SMILES) as handle:
        for line in handle:
            mol = Chem.MolFromSmiles(line.split()[0])
            if mol is not None and mol.GetNumAtoms() > 1:
                mols.append(mol)
            if len(mols) == 500:
                break
    return [mol_to_graph(m) for m in mols], np.array([Crippen.MolLogP(m) for m in mols])


def test_cross_validated_logp_r2(nci_logp):
    graphs, logp = nci_logp
    result = cross_validate_gnn(graphs, logp, n_splits=5, seed=0, epochs=20)
    assert len(result["r2"]) == len(result["rmse"]) == 5
    # measured: mean R^2 0.91 (folds 0.87-0.96), RMSE 0.59 logP units vs. logP std 1.9
    assert result["r2_mean"] > 0.75
    assert min(result["r2"]) > 0.6
    assert result["rmse_mean"] < 0.6 * logp.std()
    assert result["r2_std"] == pytest.approx(np.std(result["r2"]))


def test_fit_is_seeded_and_predicts_in_target_units(nci_logp):
    graphs, logp = nci_logp
    train, test = graphs[:120], graphs[120:150]
    a = fit_molecule_gnn(train, logp[:120], epochs=2, seed=3)
    b = fit_molecule_gnn(train, logp[:120], epochs=2, seed=3)
    pa, pb = predict(a, test), predict(b, test)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-5)
    assert pa.shape == (30,)
    # de-standardised: predictions live on the logP scale, not around 0 with unit spread
    assert a.y_mean.item() == pytest.approx(logp[:120].mean(), rel=1e-5)
    emb = embed(a, test)
    assert emb.shape == (30, a.embedding_dim) and np.isfinite(emb).all()


def test_forward_shapes_on_a_batch():
    from torch_geometric.data import Batch

    model = MoleculeGNN(NODE_DIM, EDGE_DIM, hidden=16, layers=2)
    batch = Batch.from_data_list(smiles_to_graphs(["CCO", "c1ccccc1", "C"]))
    assert model(batch).shape == (3,)


def test_bad_inputs():
    graphs = smiles_to_graphs(["CCO", "CCN"])
    with pytest.raises(MoleculeError, match="2 graphs but 3"):
        fit_molecule_gnn(graphs, [1.0, 2.0, 3.0], epochs=1)
    with pytest.raises(MoleculeError, match="NaN"):
        fit_molecule_gnn(graphs, [1.0, float("nan")], epochs=1)
    with pytest.raises(MoleculeError, match="n_splits"):
        cross_validate_gnn(graphs, [1.0, 2.0], n_splits=5)
