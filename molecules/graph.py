"""Molecules as PyTorch Geometric graphs: atoms are nodes, bonds are edges in both directions.

Atom features (``NODE_DIM``): one-hot element (``ATOM_ELEMENTS`` + other), one-hot degree
(0-5, 6+), one-hot formal charge (-2..+2, other), aromatic flag, one-hot hybridisation
(sp, sp2, sp3, sp3d, sp3d2, other), one-hot total H count (0-4+) and ring flag.
Bond features (``EDGE_DIM``): one-hot type (single, double, triple, aromatic), conjugated, ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rdkit import Chem, rdBase
from torch_geometric.data import Data

from fusion.errors import MoleculeError

__all__ = [
    "ATOM_ELEMENTS",
    "NODE_DIM",
    "EDGE_DIM",
    "NODE_FEATURE_SLICES",
    "mol_to_graph",
    "smiles_to_graphs",
]

ATOM_ELEMENTS: tuple[str, ...] = ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se", "Na", "K")
_MAX_DEGREE = 6  # degrees 0..5, then "6 or more"
_CHARGES = (-2, -1, 0, 1, 2)
_HYBRIDISATIONS = (
    Chem.HybridizationType.SP, Chem.HybridizationType.SP2, Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D, Chem.HybridizationType.SP3D2,
)
_MAX_HS = 4  # 0..3, then "4 or more"
_BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)

# Column ranges of each atom feature block in ``Data.x`` (start, stop).
_SIZES = {
    "element": len(ATOM_ELEMENTS) + 1,
    "degree": _MAX_DEGREE + 1,
    "formal_charge": len(_CHARGES) + 1,
    "aromatic": 1,
    "hybridisation": len(_HYBRIDISATIONS) + 1,
    "num_hs": _MAX_HS + 1,
    "in_ring": 1,
}
NODE_FEATURE_SLICES: dict[str, tuple[int, int]] = {}
_start = 0
for _name, _size in _SIZES.items():
    NODE_FEATURE_SLICES[_name] = (_start, _start + _size)
    _start += _size
NODE_DIM: int = _start
EDGE_DIM: int = len(_BOND_TYPES) + 2

_ELEMENT_INDEX = {e: i for i, e in enumerate(ATOM_ELEMENTS)}
_CHARGE_INDEX = {c: i for i, c in enumerate(_CHARGES)}
_HYB_INDEX = {h: i for i, h in enumerate(_HYBRIDISATIONS)}
_BOND_INDEX = {b: i for i, b in enumerate(_BOND_TYPES)}


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[index]


def mol_to_graph(mol: Chem.Mol) -> Data:
    """Graph of one RDKit molecule: x (atoms, NODE_DIM), edge_index (2, 2*bonds), edge_attr (2*bonds, EDGE_DIM)."""
    if mol is None or mol.GetNumAtoms() == 0:
        raise MoleculeError("mol_to_graph: empty or missing molecule")
    atoms = list(mol.GetAtoms())
    other_element = len(ATOM_ELEMENTS)
    element = np.array([_ELEMENT_INDEX.get(a.GetSymbol(), other_element) for a in atoms])
    degree = np.minimum([a.GetDegree() for a in atoms], _MAX_DEGREE)
    charge = np.array([_CHARGE_INDEX.get(a.GetFormalCharge(), len(_CHARGES)) for a in atoms])
    aromatic = np.array([a.GetIsAromatic() for a in atoms], dtype=np.float32)[:, None]
    hyb = np.array([_HYB_INDEX.get(a.GetHybridization(), len(_HYBRIDISATIONS)) for a in atoms])
    num_hs = np.minimum([a.GetTotalNumHs() for a in atoms], _MAX_HS)
    in_ring = np.array([a.IsInRing() for a in atoms], dtype=np.float32)[:, None]
    x = np.concatenate([
        _one_hot(element, _SIZES["element"]), _one_hot(degree, _SIZES["degree"]),
        _one_hot(charge, _SIZES["formal_charge"]), aromatic,
        _one_hot(hyb, _SIZES["hybridisation"]), _one_hot(num_hs, _SIZES["num_hs"]), in_ring,
    ], axis=1)

    bonds = list(mol.GetBonds())
    if bonds:
        ends = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds]).T
        bond_type = np.array([_BOND_INDEX.get(b.GetBondType(), 0) for b in bonds])
        flags = np.array([(b.GetIsConjugated(), b.IsInRing()) for b in bonds], dtype=np.float32)
        attr = np.concatenate([_one_hot(bond_type, len(_BOND_TYPES)), flags], axis=1)
        # bond k appears as edges k (i -> j) and n_bonds + k (j -> i)
        edge_index = np.concatenate([ends, ends[::-1]], axis=1)
        edge_attr = np.concatenate([attr, attr], axis=0)
    else:
        edge_index = np.zeros((2, 0), dtype=np.int64)
        edge_attr = np.zeros((0, EDGE_DIM), dtype=np.float32)
    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(np.ascontiguousarray(edge_index, dtype=np.int64)),
        edge_attr=torch.from_numpy(np.ascontiguousarray(edge_attr, dtype=np.float32)),
        smiles=Chem.MolToSmiles(mol),
    )


def smiles_to_graphs(smiles_list: Sequence[str]) -> list[Data]:
    """Graphs of a list of SMILES (heavy atoms only); MoleculeError names the first unparsable one."""
    graphs = []
    for i, smiles in enumerate(smiles_list):
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
        if mol is None or mol.GetNumAtoms() == 0:
            raise MoleculeError(f"smiles_list[{i}]: SMILES {smiles!r} is not parseable")
        graphs.append(mol_to_graph(mol))
    return graphs
