"""Molecular graphs: node/edge counts, directions and feature flags on small hand-checked molecules."""

import pytest
import torch
from rdkit import Chem

from fusion.errors import MoleculeError
from molecules.graph import ATOM_ELEMENTS, EDGE_DIM, NODE_DIM, NODE_FEATURE_SLICES, mol_to_graph, smiles_to_graphs


def _block(g, name):
    start, stop = NODE_FEATURE_SLICES[name]
    return g.x[:, start:stop]


def test_benzene():
    g = mol_to_graph(Chem.MolFromSmiles("c1ccccc1"))
    assert g.num_nodes == 6 and g.x.shape == (6, NODE_DIM)
    assert g.edge_index.shape == (2, 12) and g.edge_attr.shape == (12, EDGE_DIM)
    # every bond appears in both directions
    pairs = set(map(tuple, g.edge_index.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert _block(g, "aromatic").squeeze(1).tolist() == [1.0] * 6
    assert _block(g, "in_ring").squeeze(1).tolist() == [1.0] * 6
    assert _block(g, "element")[:, ATOM_ELEMENTS.index("C")].tolist() == [1.0] * 6
    assert _block(g, "degree")[:, 2].tolist() == [1.0] * 6  # two ring neighbours each
    assert _block(g, "num_hs")[:, 1].tolist() == [1.0] * 6  # one H each
    assert _block(g, "hybridisation")[:, 1].tolist() == [1.0] * 6  # sp2
    # bond type one-hot: aromatic is column 3; all conjugated, all in ring
    assert g.edge_attr[:, 3].tolist() == [1.0] * 12
    assert g.edge_attr[:, 4:].tolist() == [[1.0, 1.0]] * 12


def test_each_atom_block_is_one_hot():
    g = mol_to_graph(Chem.MolFromSmiles("CC(=O)[O-].[Na+]"))
    for name in ("element", "degree", "formal_charge", "hybridisation", "num_hs"):
        assert torch.all(_block(g, name).sum(dim=1) == 1), name


def test_acetate_charge_bonds_and_other_element():
    g = mol_to_graph(Chem.MolFromSmiles("CC(=O)[O-].[Zn+2]"))
    assert g.num_nodes == 5 and g.edge_index.shape == (2, 6)
    charge = _block(g, "formal_charge")  # columns: -2, -1, 0, +1, +2, other
    assert charge[3, 1] == 1.0 and charge[4, 4] == 1.0 and charge[0, 2] == 1.0
    assert _block(g, "element")[4, len(ATOM_ELEMENTS)] == 1.0  # Zn -> "other"
    # bond C=O is double (column 1), C-C single (column 0), none aromatic
    assert sorted(g.edge_attr[:, :4].argmax(dim=1).tolist()) == [0, 0, 0, 0, 1, 1]


def test_single_atom_has_no_edges():
    (g,) = smiles_to_graphs(["C"])
    assert g.num_nodes == 1 and g.edge_index.shape == (2, 0) and g.edge_attr.shape == (0, EDGE_DIM)
    assert g.edge_index.dtype == torch.long


def test_smiles_to_graphs_names_the_bad_entry():
    graphs = smiles_to_graphs(["CCO", "c1ccncc1"])
    assert [g.num_nodes for g in graphs] == [3, 6]
    with pytest.raises(MoleculeError, match=r"\[1\].*C1CC\("):
        smiles_to_graphs(["CCO", "C1CC("])
