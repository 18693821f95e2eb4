"""Stage: whole-slide images -> stain-normalised tiles -> self-supervised tile features (+ cellularity)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import SlideError
from imaging.slide import open_slide
from imaging.stain import StainNormalizer, mean_concentrations, slide_stain_matrix
from imaging.tiling import TileGrid, iter_tiles, prefetch, tile_grid
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


# the modules a slide worker needs, imported once in the fork server (flows.store.isolate)
SLIDE_PRELOAD = ("flows.stages.pathology", "imaging.slide_summary", "tifffile", "openslide", "imagecodecs")


def plan_slide(patient_id: str, path: Path, tile_size: int, target_mpp: float, min_tissue: float,
               seed: int, verify: bool = False, isolate: bool = True) -> SlidePlan:
    """Open a slide, detect tissue, lay the tile grid and fit its Macenko normaliser (SlideError if unusable);
    with ``verify`` first decode every tile of every level (``imaging.slide_summary.require_intact_slide``:
    SlideError naming the damaged tiles).

    With ``isolate`` (the default) the slide is read in a worker process (``flows.store.isolate``): a
    reader that dies in native code (libtiff, OpenSlide, an image codec) or runs out of memory fails this
    slide with a SlideError naming it ("<path>: the reader died in native code (killed by signal ...)"),
    and the run goes on. One fork per slide; only the plan (grid and stain normaliser) comes back."""
    args = (patient_id, Path(path), tile_size, target_mpp, min_tissue, seed, verify)
    if not isolate:
        return read_slide_plan(*args)
    from flows.store.isolate import run_isolated

    return run_isolated(read_slide_plan, *args, what=str(path), error=SlideError, preload=SLIDE_PRELOAD)


def read_slide_plan(patient_id: str, path: Path, tile_size: int, target_mpp: float, min_tissue: float,
                    seed: int, verify: bool = False) -> SlidePlan:
    """``plan_slide`` in the calling process (what its worker runs): the same arguments and result."""
    if verify:
        from imaging.slide_summary import require_intact_slide

        require_intact_slide(path)
    with open_slide(path) as slide:
        mask, down = tissue_mask(slide)
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=target_mpp, min_tissue=min_tissue)
        if len(grid) == 0:
            raise SlideError(f"{path}: no tile has >= {min_tissue:.0%} tissue at {target_mpp} um/px")
        stains, max_conc = slide_stain_matrix(slide, seed=seed)
    normalizer = StainNormalizer().with_source(stains, max_conc)
    return SlidePlan(patient_id=patient_id, path=Path(path), grid=grid, normalizer=normalizer)


def sample_tiles(plan: SlidePlan, n: int, seed: int) -> np.ndarray:
    """Up to n stain-normalised tiles of a slide (uint8 [n, H, W, 3]) for self-supervised training;
    SlideError naming the slide and the tile when a tile cannot be decoded."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(plan.grid), size=min(n, len(plan.grid)), replace=False))
    sub = plan.grid.subset(pick)
    with open_slide(plan.path) as slide:
        tiles = [plan.normalizer.transform(t) for _, t in iter_tiles(slide, sub, batch_size=64)]
    return np.concatenate(tiles) if tiles else np.empty((0, sub.tile_size, sub.tile_size, 3), np.uint8)


def sample_cohort_tiles(plans: list[SlidePlan], n: int, seed: int, log=print) -> np.ndarray:
    """Training tiles from every slide (up to n each, seed + i for slide i); a slide whose tiles cannot be
    read is left out with a logged reason (its feature extraction reports it), never failing the cohort.
    SlideError only when no slide gives a tile."""
    parts = []
    for i, plan in enumerate(plans):
        try:
            parts.append(sample_tiles(plan, n, seed + i))
        except SlideError as exc:
            log(f"[wsi] {plan.patient_id}: left out of the tile-encoder training: {exc}")
    if not parts:
        raise SlideError(f"no readable tile in any of the {len(plans)} slides to train the tile encoder")
    return np.concatenate(parts)


def hematoxylin_density(tiles: np.ndarray, normalizer: StainNormalizer) -> np.ndarray:
    """Mean hematoxylin concentration per tile (cellularity proxy) from the normalised tiles [B] (per-tile
    colour histograms: 3x faster than per pixel, equal within 1e-15)."""
    return mean_concentrations(tiles, normalizer.target_stain_matrix)[:, 0]


CELLULARITY_DATASET = "hematoxylin_density"


def _normalised_batches(slide, plan: SlidePlan, batch_size: int):
    """(stain-normalised tiles uint8 [B,H,W,3], their hematoxylin density [B]) batch by batch, in grid order
    (the tiles read ahead by iter_tiles' reader thread)."""
    for _, tiles in iter_tiles(slide, plan.grid, batch_size=batch_size):
        norm = plan.normalizer.transform(tiles)
        yield norm, hematoxylin_density(norm, plan.normalizer)


def extract_features(plan: SlidePlan, encoder, out_path: Path, batch_size: int = 64) -> Path:
    """Stream the slide's tiles (normalised) through the encoder into a TileFeatures HDF5, batch by batch
    (memory flat in slide size), with the per-tile hematoxylin density (dataset ``hematoxylin_density``).
    Three stages overlap: a thread reads the tiles, a second normalises them and measures the density (each
    up to two batches ahead), the calling thread encodes and writes.
    Written to a temp file and renamed; SlideError names the slide and tile on a corrupt tile."""
    import h5py

    n = len(plan.grid)
    tmp = out_path.with_name(f".{out_path.name}.part.h5")
    try:
        with open_slide(plan.path) as slide, h5py.File(tmp, "w") as f:
            f.create_dataset("coords_level0", data=plan.grid.coords_level0.astype(np.int64))
            dens = np.empty(n, dtype=np.float32)  # 4 bytes a tile, written once
            feats = None
            start = 0
            for norm, density in prefetch(_normalised_batches(slide, plan, batch_size), name="extract_features"):
                z = np.asarray(encoder.encode(norm, batch_size=batch_size), dtype=np.float32)
                if feats is None:
                    feats = f.create_dataset("features", shape=(n, z.shape[1]), dtype=np.float32,
                                             chunks=(min(n, 1024), z.shape[1]), compression="gzip")
                feats[start : start + len(z)] = z
                dens[start : start + len(z)] = density
                start += len(z)
            f.create_dataset(CELLULARITY_DATASET, data=dens)
            # CLAM-style `coords` beside `coords_level0`, so other tools read the file as it is
            f.create_dataset("coords", data=plan.grid.coords_level0.astype(np.int64))
            f.attrs.update({"tile_size_level0": int(plan.grid.tile_size_level0), "mpp": float(plan.grid.mpp),
                            "slide_path": str(plan.path), "level": int(plan.grid.level),
                            "tile_size": int(plan.grid.tile_size), **_encoder_attrs(encoder)})
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out_path)
    return out_path


def _encoder_attrs(encoder) -> dict[str, object]:
    """The encoder's record in a feature file: name, weights SHA-256, tile size (px) and mpp it expects."""
    name = getattr(encoder, "name", type(encoder).__name__)
    return {"encoder": str(name), "weights_sha256": str(getattr(encoder, "weights_sha256", "") or ""),
            "encoder_tile_px": int(getattr(encoder, "tile_px", 0) or 0),
            "encoder_mpp": float(getattr(encoder, "mpp", None) or float("nan"))}


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
