"""Format-only writer for Visium-like spatial transcriptomics h5ad files (as scanpy's read_visium lays them out)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

_ACGT = np.array(list("ACGT"))


def hex_spot_grid(
    bbox_level0: tuple[float, float, float, float], spot_pitch_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visium-like hexagonal lattice of spot centres inside (x0, y0, x1, y1) level-0 pixels.

    Returns pixel_coords [n, 2] as (x, y) level-0 pixels, array_row and array_col (Visium indexing:
    rows are pitch*sqrt(3)/2 apart, odd rows shifted by half a pitch, array_col counts half-pitches).
    """
    x0, y0, x1, y1 = (float(v) for v in bbox_level0)
    if spot_pitch_px <= 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"hex_spot_grid: need x1 > x0, y1 > y0 and a positive pitch, got {bbox_level0}, {spot_pitch_px}")
    half = spot_pitch_px / 2.0
    dy = spot_pitch_px * np.sqrt(3.0) / 2.0
    n_rows = int(np.floor((y1 - y0 - spot_pitch_px) / dy)) + 1
    n_half_cols = int(np.floor((x1 - x0 - spot_pitch_px) / half)) + 1
    if n_rows < 1 or n_half_cols < 1:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_half_cols), indexing="ij")
    keep = (rows % 2) == (cols % 2)
    array_row, array_col = rows[keep].astype(np.int64), cols[keep].astype(np.int64)
    x = x0 + half + array_col * half
    y = y0 + half + array_row * dy
    return np.stack([x, y], axis=1), array_row, array_col


def spot_barcodes(n: int) -> list[str]:
    """Deterministic 16-base Visium-style spot barcodes ('AAAAAAAAAAAAAAAC-1', ...)."""
    digits = (np.arange(n)[:, None] // (4 ** np.arange(15, -1, -1))[None, :]) % 4
    return ["".join(row) + "-1" for row in _ACGT[digits]]


def write_visium_h5ad(
    path: str | Path,
    *,
    counts: np.ndarray,
    gene_names: Sequence[str],
    gene_ids: Sequence[str],
    pixel_coords_level0: np.ndarray,
    array_row: np.ndarray,
    array_col: np.ndarray,
    hires_image: np.ndarray,
    tissue_hires_scalef: float,
    spot_diameter_fullres: float,
    library_id: str,
    patient_id: str,
    in_tissue: np.ndarray | None = None,
) -> Path:
    """Write spots x genes integer counts with Visium slots to an h5ad (temp file, then rename).

    obsm['spatial'] holds (x, y) spot centres in full-resolution (slide level-0) pixels; the hires image
    is the full-resolution image scaled by tissue_hires_scalef; lowres is a further downsample of it.
    """
    counts = np.asarray(counts)
    n_spots, n_genes = counts.shape
    coords = np.asarray(pixel_coords_level0, dtype=np.float64)
    if coords.shape != (n_spots, 2):
        raise ValueError(f"write_visium_h5ad: pixel_coords_level0 must be [{n_spots}, 2], got {coords.shape}")
    if len(gene_names) != n_genes or len(gene_ids) != n_genes:
        raise ValueError("write_visium_h5ad: gene_names and gene_ids must have one entry per count column")
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("write_visium_h5ad: counts must be non-negative integers")
    image = np.asarray(hires_image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_visium_h5ad: hires_image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    factor = max(1, int(round(max(image.shape[:2]) / 600)))
    lowres = np.ascontiguousarray(image[::factor, ::factor])
    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(n_spots, dtype=np.int64) if in_tissue is None else np.asarray(in_tissue, np.int64),
            "array_row": np.asarray(array_row, dtype=np.int64),
            "array_col": np.asarray(array_col, dtype=np.int64),
        },
        index=pd.Index(spot_barcodes(n_spots)),
    )
    var = pd.DataFrame(
        {"gene_ids": list(gene_ids), "feature_types": "Gene Expression", "genome": "GRCh38"},
        index=pd.Index([str(g) for g in gene_names]),
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.obsm["spatial"] = coords
    adata.uns["spatial"] = {
        library_id: {
            "images": {"hires": image, "lowres": lowres},
            "scalefactors": {
                "tissue_hires_scalef": float(tissue_hires_scalef),
                "tissue_lowres_scalef": float(tissue_hires_scalef) / factor,
                "spot_diameter_fullres": float(spot_diameter_fullres),
                "fiducial_diameter_fullres": float(spot_diameter_fullres) * 1.6,
            },
            "metadata": {"chemistry_description": "Spatial 3' v1", "software_version": "spaceranger-2.1.0"},
        }
    }
    adata.uns["patient_id"] = patient_id
    adata.uns["library_id"] = library_id
    # the spots were placed on the slide's level-0 pixels: the Visium -> slide affine is the identity, written
    # explicitly (readers never assume it)
    adata.uns["slide_transform"] = np.eye(3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_spaceranger_folder(
    out_dir: str | Path,
    *,
    counts: np.ndarray,
    gene_names: Sequence[str],
    gene_ids: Sequence[str],
    pixel_coords_fullres: np.ndarray,
    array_row: np.ndarray,
    array_col: np.ndarray,
    hires_image: np.ndarray,
    tissue_hires_scalef: float,
    spot_diameter_fullres: float,
) -> Path:
    """Write a Space Ranger (2.x) 'outs' folder: filtered_feature_bc_matrix.h5 (10x v3 HDF5, genes x
    barcodes CSC), spatial/tissue_positions.csv (with header; pxl_row/col in full-resolution image
    pixels), scalefactors_json.json and the hires / lowres PNGs."""
    import json

    import h5py
    from PIL import Image

    out_dir = Path(out_dir)
    counts = np.asarray(counts)
    n_spots, n_genes = counts.shape
    barcodes = spot_barcodes(n_spots)
    csc = sp.csr_matrix(counts.astype(np.int32))  # spots x genes CSR == genes x spots CSC
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    (tmp / "spatial").mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["library_ids"] = np.array([b"fusionrx"])
        f.attrs["chemistry_description"] = "Spatial 3' v1"
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"] = csc.data.astype(np.int32)
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array([n_genes, n_spots], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array(list(gene_ids), dtype="S")
        feats["name"] = np.array([str(g) for g in gene_names], dtype="S")
        feats["feature_type"] = np.array([b"Gene Expression"] * n_genes)
        feats["genome"] = np.array([b"GRCh38"] * n_genes)
        feats["_all_tag_keys"] = np.array([b"genome"])
    xy = np.asarray(pixel_coords_fullres, dtype=np.float64)
    pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": np.asarray(array_row, np.int64),
                  "array_col": np.asarray(array_col, np.int64),
                  "pxl_row_in_fullres": np.rint(xy[:, 1]).astype(np.int64),
                  "pxl_col_in_fullres": np.rint(xy[:, 0]).astype(np.int64)}
                 ).to_csv(tmp / "spatial" / "tissue_positions.csv", index=False)
    image = np.asarray(hires_image, dtype=np.uint8)
    factor = max(1, int(round(max(image.shape[:2]) / 600)))
    Image.fromarray(image).save(tmp / "spatial" / "tissue_hires_image.png")
    # full-resolution image = the slide's level 0 here, so the Visium -> slide affine is the identity (explicit)
    (tmp / "slide_transform.json").write_text(json.dumps({"matrix": np.eye(3).tolist()}))
    Image.fromarray(np.ascontiguousarray(image[::factor, ::factor])).save(tmp / "spatial" / "tissue_lowres_image.png")
    (tmp / "spatial" / "scalefactors_json.json").write_text(json.dumps({
        "tissue_hires_scalef": float(tissue_hires_scalef), "tissue_lowres_scalef": float(tissue_hires_scalef) / factor,
        "fiducial_diameter_fullres": float(spot_diameter_fullres) * 1.6,
        "spot_diameter_fullres": float(spot_diameter_fullres)}))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return out_dir
