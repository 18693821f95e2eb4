"""2D structure drawings of molecules as SVG (RDKit's MolDraw2DSVG)."""

from __future__ import annotations

from rdkit.Chem import rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D

from molecules.io import parse_smiles

MAX_SIZE_PX = 1200


def smiles_to_svg(smiles: str, width: int = 260, height: int = 200) -> str:
    """An SVG drawing of a SMILES (2D coordinates computed by RDKit); MoleculeError if unparsable."""
    if not (16 <= width <= MAX_SIZE_PX and 16 <= height <= MAX_SIZE_PX):
        raise ValueError(f"drawing size must be 16..{MAX_SIZE_PX} px, found {width}x{height}")
    mol = parse_smiles(smiles)
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()
