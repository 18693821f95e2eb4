"""Stage: whole-slide images -> stain-normalised tiles -> self-supervised tile features (+ cellularity)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import SlideError
from imaging.slide import open_slide
from imaging.stain import StainNormalizer, concentrations, rgb_to_od, slide_stain_matrix
from imaging.tiling import TileGrid, iter_tiles, tile_grid
from imaging.tissue import tissue_mask


@dataclass
class SlidePlan:
    """A slide's tiling and its stain normaliser, computed once and reused by every pass."""

    patient_id: str
    path: Path
    grid: TileGrid
    normalizer: StainNormalizer


def discover_slides(root: Path, pattern: str | None, id_map: dict[str, str] | None = None) -> dict[str, Path]:
    """Slide files keyed by patient id (first 12 characters of the TCGA slide barcode, through the id map)."""
    id_map = id_map or {}
    out: dict[str, Path] = {}
    for p in sorted(root.glob(pattern or "*")):
        if p.is_file():
            pid = id_map.get(p.stem, p.stem[:12])
            out.setdefault(pid, p)
    return out


def plan_slide(patient_id: str, path: Path, tile_size: int, target_mpp: float, min_tissue: float,
               seed: int) -> SlidePlan:
    """Open a slide, detect tissue, lay the tile grid and fit its Macenko normaliser (SlideError if unusable)."""
    with open_slide(path) as slide:
        mask, down = tissue_mask(slide)
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=target_mpp, min_tissue=min_tissue)
        if len(grid) == 0:
            raise SlideError(f"{path}: no tile has >= {min_tissue:.0%} tissue at {target_mpp} um/px")
        stains, max_conc = slide_stain_matrix(slide, seed=seed)
    normalizer = StainNormalizer().with_source(stains, max_conc)
    return SlidePlan(patient_id=patient_id, path=Path(path), grid=grid, normalizer=normalizer)


def sample_tiles(plan: SlidePlan, n: int, seed: int) -> np.ndarray:
    """Up to n stain-normalised tiles of a slide (uint8 [n, H, W, 3]) for self-supervised training."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(plan.grid), size=min(n, len(plan.grid)), replace=False))
    sub = TileGrid(coords_level0=plan.grid.coords_level0[pick], tile_size_level0=plan.grid.tile_size_level0,
                   level=plan.grid.level, tile_size=plan.grid.tile_size, mpp=plan.grid.mpp)
    with open_slide(plan.path) as slide:
        tiles = [plan.normalizer.transform(t) for _, t in iter_tiles(slide, sub, batch_size=64)]
    return np.concatenate(tiles) if tiles else np.empty((0, sub.tile_size, sub.tile_size, 3), np.uint8)


def hematoxylin_density(tiles: np.ndarray, normalizer: StainNormalizer) -> np.ndarray:
    """Mean hematoxylin concentration per tile (cellularity proxy) from the normalised tiles [B]."""
    od = rgb_to_od(tiles.reshape(-1, 3))
    conc = concentrations(od, normalizer.target_stain_matrix)
    return conc[:, 0].reshape(len(tiles), -1).mean(axis=1)


CELLULARITY_DATASET = "hematoxylin_density"


def extract_features(plan: SlidePlan, encoder, out_path: Path, batch_size: int = 64) -> Path:
    """Stream the slide's tiles (normalised) through the encoder; write TileFeatures HDF5 plus the
    per-tile hematoxylin density (dataset ``hematoxylin_density``). Returns the HDF5 path."""
    import h5py

    from imaging.tile_encoder import TileFeatures

    feats, dens = [], []
    with open_slide(plan.path) as slide:
        for _, tiles in iter_tiles(slide, plan.grid, batch_size=batch_size):
            norm = plan.normalizer.transform(tiles)
            feats.append(encoder.encode(norm, batch_size=batch_size))
            dens.append(hematoxylin_density(norm, plan.normalizer))
    tf = TileFeatures(features=np.concatenate(feats), coords_level0=plan.grid.coords_level0,
                      tile_size_level0=plan.grid.tile_size_level0, mpp=plan.grid.mpp, slide_path=str(plan.path),
                      level=plan.grid.level, tile_size=plan.grid.tile_size)
    tmp = out_path.with_name(f".{out_path.name}.part.h5")
    tf.save_h5(tmp)
    with h5py.File(tmp, "a") as f:
        f.create_dataset(CELLULARITY_DATASET, data=np.concatenate(dens).astype(np.float32))
    tmp.replace(out_path)
    return out_path


def _load_features_and_density(features_h5: Path):
    """TileFeatures of a features file plus its per-tile hematoxylin density [T] (one pass over the file)."""
    import h5py

    from imaging.tile_encoder import TileFeatures

    tf = TileFeatures.load_h5(features_h5)
    with h5py.File(features_h5, "r") as f:
        if CELLULARITY_DATASET not in f:
            raise SlideError(f"{features_h5}: lacks dataset '{CELLULARITY_DATASET}'")
        dens = f[CELLULARITY_DATASET][()]
    return tf, dens


def load_tile_table(features_h5: Path) -> tuple[np.ndarray, int, np.ndarray]:
    """Tile level-0 coordinates [T,2], tile size at level 0 and hematoxylin density [T] of a features file."""
    tf, dens = _load_features_and_density(features_h5)
    return tf.coords_level0, tf.tile_size_level0, dens


def slide_bag(features_h5: Path) -> np.ndarray:
    """One slide's MIL bag: tile CNN features with the tile's hematoxylin density appended [T, d+1]."""
    tf, dens = _load_features_and_density(features_h5)
    return np.column_stack([tf.features, dens]).astype(np.float32)
