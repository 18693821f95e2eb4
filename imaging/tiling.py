"""Tile grids over tissue and streaming tile reads: a slide is read tile by tile, never whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fusion.errors import SlideError
from imaging.slide import slide_mpp
from imaging.tissue import rgba_to_rgb

if TYPE_CHECKING:  # pragma: no cover
    import openslide


@dataclass(frozen=True)
class TileGrid:
    """Square tiles: level-0 top-left (x, y) px [T,2], their level-0 side, the read level, side at it and its mpp."""

    coords_level0: np.ndarray  # int64 [T,2], (x, y) top-left in level-0 px
    tile_size_level0: int  # tile side in level-0 px
    level: int  # pyramid level the tiles are read from
    tile_size: int  # tile side in px at `level`
    mpp: float  # um/px at `level`

    def __len__(self) -> int:
        return int(self.coords_level0.shape[0])


def _level_for_mpp(slide: "openslide.OpenSlide", target_mpp: float) -> tuple[int, float]:
    """Pyramid level whose mpp is closest to target_mpp (in log scale) and that level's mpp."""
    mpp0 = slide_mpp(slide)
    level_mpp = mpp0 * np.asarray(slide.level_downsamples, dtype=np.float64)
    level = int(np.argmin(np.abs(np.log(level_mpp / target_mpp))))
    return level, float(level_mpp[level])


def tissue_fraction(
    mask: np.ndarray, mask_downsample: float, coords_level0: np.ndarray, size_level0: int
) -> np.ndarray:
    """Fraction [T] of each level-0 square (top-left coords, side size_level0) covered by the tissue mask."""
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(coords_level0[:, 0] / mask_downsample).astype(np.int64), 0, w)
    y0 = np.clip(np.floor(coords_level0[:, 1] / mask_downsample).astype(np.int64), 0, h)
    x1 = np.clip(np.ceil((coords_level0[:, 0] + size_level0) / mask_downsample).astype(np.int64), 0, w)
    y1 = np.clip(np.ceil((coords_level0[:, 1] + size_level0) / mask_downsample).astype(np.int64), 0, h)
    area = (x1 - x0) * (y1 - y0)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return np.divide(inside, area, out=np.zeros(len(area), dtype=np.float64), where=area > 0)


def tile_grid(
    slide: "openslide.OpenSlide",
    mask: np.ndarray,
    mask_downsample: float,
    tile_size: int = 128,
    target_mpp: float = 1.0,
    min_tissue: float = 0.5,
) -> TileGrid:
    """Non-overlapping tile_size-px tiles at the level nearest target_mpp (um/px) with tissue fraction >= min_tissue."""
    if tile_size <= 0:
        raise SlideError(f"tile_size={tile_size}: expected a positive number of pixels")
    level, mpp = _level_for_mpp(slide, target_mpp)
    size0 = int(round(tile_size * float(slide.level_downsamples[level])))
    width0, height0 = slide.level_dimensions[0]
    xs = np.arange(0, width0 - size0 + 1, size0, dtype=np.int64)
    ys = np.arange(0, height0 - size0 + 1, size0, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
    coords = np.column_stack([gx.ravel(), gy.ravel()])
    keep = tissue_fraction(mask, mask_downsample, coords, size0) >= min_tissue
    return TileGrid(coords_level0=coords[keep], tile_size_level0=size0, level=level, tile_size=int(tile_size), mpp=mpp)


def iter_tiles(
    slide: "openslide.OpenSlide", grid: TileGrid, batch_size: int = 64
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the grid's tiles in batches: (coords_level0 int64 [B,2], RGB uint8 [B,tile,tile,3])."""
    size = (grid.tile_size, grid.tile_size)
    for start in range(0, len(grid), batch_size):
        coords = grid.coords_level0[start : start + batch_size]
        tiles = np.empty((len(coords), grid.tile_size, grid.tile_size, 3), dtype=np.uint8)
        for i, (x, y) in enumerate(coords):
            try:
                region = slide.read_region((int(x), int(y)), grid.level, size)
            except Exception as exc:  # openslide.OpenSlideError: a corrupt tile in the file
                where = getattr(slide, "_filename", "slide")
                msg = f"{where}: cannot read tile at level-0 ({x}, {y}), level {grid.level} ({exc})"
                raise SlideError(msg) from exc
            tiles[i] = rgba_to_rgb(np.asarray(region))
        yield coords, tiles


def tile_index_at(points_level0: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Index [P] of the grid tile containing each level-0 point (x, y), -1 where no tile contains it."""
    points = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
    coords = np.asarray(grid.coords_level0, dtype=np.int64)
    size = grid.tile_size_level0
    out = np.full(len(points), -1, dtype=np.int64)
    if len(points) == 0 or len(coords) == 0:
        return out
    origin = coords.min(axis=0)
    if np.all((coords - origin) % size == 0):
        # tiles on a lattice: look up each point's lattice cell among the tiles' cells
        cell_t = (coords - origin) // size
        cell_p = np.floor((points - origin) / size).astype(np.int64)
        ncol = int(cell_t[:, 0].max()) + 2
        key_t = cell_t[:, 1] * ncol + cell_t[:, 0]
        order = np.argsort(key_t, kind="stable")
        sorted_keys = key_t[order]
        valid = (cell_p >= 0).all(axis=1) & (cell_p[:, 0] < ncol)
        key_p = cell_p[:, 1] * ncol + cell_p[:, 0]
        pos = np.clip(np.searchsorted(sorted_keys, key_p), 0, len(sorted_keys) - 1)
        hit = valid & (sorted_keys[pos] == key_p)
        out[hit] = order[pos[hit]]
        return out
    # general layout: brute-force containment test in chunks (first containing tile wins)
    chunk = max(1, 4_000_000 // len(coords))
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk, None, :]
        inside = ((p >= coords[None]) & (p < coords[None] + size)).all(axis=2)
        any_hit = inside.any(axis=1)
        out[s : s + chunk][any_hit] = inside.argmax(axis=1)[any_hit]
    return out
