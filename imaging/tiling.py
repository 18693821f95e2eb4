"""Tile grids over tissue and streaming tile reads: a slide is read tile by tile, never whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from fusion.errors import SlideError
from imaging.slide import slide_mpp
from imaging.pixels import area_resize, rgba_to_rgb  # noqa: F401 (area_resize re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import openslide


MPP_TOLERANCE = 0.02  # a level within 2% of the target mpp is read as is (vendors round mpp: 0.499 vs 0.5)


@dataclass(frozen=True)
class TileGrid:
    """Square tiles defined in microns: level-0 top-left (x, y) px [T,2] and side in level-0 px, the level
    they are read from, the output side tile_size px, its mpp (um/px) and the side read at `level`.

    A tile covers tile_size * mpp um whatever the scan magnification: the region of read_size px at
    `level` (the nearest level finer than the target) is area-downsampled to tile_size px.
    """

    coords_level0: np.ndarray  # int64 [T,2], (x, y) top-left in level-0 px
    tile_size_level0: int  # tile side in level-0 px (rounded)
    level: int  # pyramid level the tiles are read from
    tile_size: int  # tile side in px as returned (at `mpp`)
    mpp: float  # um/px of the returned tiles
    read_size: int = 0  # side read at `level` before resizing to tile_size; 0 means tile_size

    def __len__(self) -> int:
        return int(self.coords_level0.shape[0])

    @property
    def tile_um(self) -> float:
        """Tile side in micrometres."""
        return float(self.tile_size * self.mpp)

    def subset(self, index: np.ndarray) -> "TileGrid":
        """The same grid restricted to tiles `index`."""
        return replace(self, coords_level0=self.coords_level0[index])


def _level_for_mpp(slide: "openslide.OpenSlide", target_mpp: float,
                   tolerance: float = MPP_TOLERANCE) -> tuple[int, float]:
    """Level to read for target_mpp (um/px): one within `tolerance` if any, else the nearest finer level
    (the coarsest whose mpp < target), else level 0; returns (level, its mpp)."""
    mpp0 = slide_mpp(slide)
    level_mpp = mpp0 * np.asarray(slide.level_downsamples, dtype=np.float64)
    close = np.flatnonzero(np.abs(level_mpp / target_mpp - 1.0) <= tolerance)
    if len(close):
        level = int(close[np.argmin(np.abs(level_mpp[close] - target_mpp))])
    else:
        finer = np.flatnonzero(level_mpp < target_mpp)
        level = int(finer[np.argmax(level_mpp[finer])]) if len(finer) else 0
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
    tile_um: float | None = None,
    mpp_tolerance: float = MPP_TOLERANCE,
) -> TileGrid:
    """Non-overlapping tiles of tile_size px at target_mpp (um/px), or of side tile_um um at target_mpp,
    with tissue fraction >= min_tissue, laid from the slide's top-left corner in row-major order.

    The grid step is tile_size * target_mpp / mpp0 level-0 px, so the tiles cover the same tissue at 20x
    and 40x. A level within mpp_tolerance of the target is read as is (tiles then have that level's mpp).
    """
    if tile_um is not None:
        if not tile_um > 0:
            raise SlideError(f"tile_um={tile_um}: expected a positive size in micrometres")
        tile_size = int(round(tile_um / target_mpp))
    if tile_size <= 0:
        raise SlideError(f"tile_size={tile_size}: expected a positive number of pixels")
    if not target_mpp > 0:
        raise SlideError(f"target_mpp={target_mpp}: expected a positive um/px")
    mpp0 = slide_mpp(slide)
    level, level_mpp = _level_for_mpp(slide, target_mpp, mpp_tolerance)
    down = float(slide.level_downsamples[level])
    if abs(level_mpp / target_mpp - 1.0) <= mpp_tolerance:  # read as is
        mpp, read_size, step0 = level_mpp, int(tile_size), tile_size * down
    else:
        mpp = float(target_mpp)
        read_size = int(round(tile_size * target_mpp / level_mpp))
        step0 = tile_size * target_mpp / mpp0
    width0, height0 = slide.level_dimensions[0]
    nx, ny = int(np.floor(width0 / step0 + 1e-9)), int(np.floor(height0 / step0 + 1e-9))
    xs = np.rint(np.arange(nx) * step0).astype(np.int64)
    ys = np.rint(np.arange(ny) * step0).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
    coords = np.column_stack([gx.ravel(), gy.ravel()])
    size0 = int(round(step0))
    keep = tissue_fraction(mask, mask_downsample, coords, size0) >= min_tissue
    return TileGrid(coords_level0=coords[keep], tile_size_level0=size0, level=level, tile_size=int(tile_size),
                    mpp=mpp, read_size=read_size)


def read_tile(slide: "openslide.OpenSlide", grid: TileGrid, x: int, y: int) -> np.ndarray:
    """One tile RGB uint8 [tile,tile,3] at level-0 (x, y): read at grid.level, area-resized to tile_size;
    SlideError naming the slide and the tile coordinates when the file cannot be decoded there."""
    read = grid.read_size or grid.tile_size
    try:
        region = slide.read_region((int(x), int(y)), grid.level, (read, read))
    except Exception as exc:  # openslide.OpenSlideError or a codec error: a corrupt tile in the file
        where = getattr(slide, "_filename", None) or "slide"
        raise SlideError(f"{where}: cannot read the tile at level-0 ({x}, {y}), level {grid.level} "
                         f"({type(exc).__name__}: {exc})") from exc
    rgb = rgba_to_rgb(np.asarray(region))
    return rgb if read == grid.tile_size else area_resize(rgb, grid.tile_size, grid.tile_size)


def iter_tiles(
    slide: "openslide.OpenSlide", grid: TileGrid, batch_size: int = 64
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the grid's tiles in batches: (coords_level0 int64 [B,2], RGB uint8 [B,tile,tile,3])."""
    for start in range(0, len(grid), batch_size):
        coords = grid.coords_level0[start : start + batch_size]
        tiles = np.empty((len(coords), grid.tile_size, grid.tile_size, 3), dtype=np.uint8)
        for i, (x, y) in enumerate(coords):
            tiles[i] = read_tile(slide, grid, int(x), int(y))
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
