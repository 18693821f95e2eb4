"""Synthetic Visium samples with a planted region of high-expression genes, written with the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flows.synthetic.spatial_writer import hex_spot_grid, write_visium_h5ad

N_GENES = 300
PLANTED = [f"GENE{j:03d}" for j in range(10, 25)]  # 15 genes up 6x inside the region
FOLD = 6.0


def planted_counts(seed: int = 0, size: float = 2400.0, pitch: float = 100.0):
    """(counts, coords, array_row, array_col, region) for one sample; region = disk in the upper-left quadrant."""
    rng = np.random.default_rng(seed)
    coords, array_row, array_col = hex_spot_grid((0, 0, size, size), pitch)
    centre = np.array([0.4 * size, 0.45 * size])
    region = np.linalg.norm(coords - centre, axis=1) < 0.22 * size
    base = rng.lognormal(np.log(2.0), 1.0, size=N_GENES)
    mean = np.tile(base, (coords.shape[0], 1))
    planted_idx = [int(g[4:]) for g in PLANTED]
    mean[np.ix_(region, planted_idx)] *= FOLD
    library = rng.lognormal(0.0, 0.3, size=(coords.shape[0], 1))
    counts = rng.poisson(mean * library).astype(np.int64)
    return counts, coords, array_row, array_col, region


def write_planted_visium(path: Path, seed: int = 0, patient_id: str = "TCGA-FX-0001") -> tuple[Path, np.ndarray]:
    """Write one planted Visium h5ad; returns (path, region mask in spot order)."""
    counts, coords, array_row, array_col, region = planted_counts(seed)
    image = np.full((240, 240, 3), 230, dtype=np.uint8)
    gene_names = [f"GENE{j:03d}" for j in range(N_GENES)]
    gene_ids = [f"ENSG{j:011d}" for j in range(N_GENES)]
    write_visium_h5ad(
        path,
        counts=counts,
        gene_names=gene_names,
        gene_ids=gene_ids,
        pixel_coords_level0=coords,
        array_row=array_row,
        array_col=array_col,
        hires_image=image,
        tissue_hires_scalef=0.1,
        spot_diameter_fullres=55.0,
        library_id=f"{patient_id}_visium",
        patient_id=patient_id,
    )
    return path, region
