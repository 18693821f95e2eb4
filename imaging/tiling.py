"""Tile grids over tissue and streaming tile reads: a slide is read a row strip of tiles at a time, never whole."""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from fusion.errors import SlideError
from imaging.pixels import _area_weights, area_resize, rgba_to_rgb
from imaging.slide import slide_mpp

if TYPE_CHECKING:  # pragma: no cover
    import openslide


T = TypeVar("T")
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
    rgb = _read_raw_tile(slide, grid, int(x), int(y))
    return rgb if rgb.shape[0] == grid.tile_size else area_resize(rgb, grid.tile_size, grid.tile_size)


def _read_raw_tile(slide, grid: TileGrid, x: int, y: int) -> np.ndarray:
    """The read_size px square at level-0 (x, y), grid.level, as RGB (transparent -> white); SlideError
    naming the slide, the tile's level-0 coordinates and its level when it cannot be decoded."""
    read = grid.read_size or grid.tile_size
    try:
        region = slide.read_region((x, y), grid.level, (read, read))
    except Exception as exc:  # openslide.OpenSlideError or a codec error: a corrupt tile in the file
        raise SlideError(f"{_where(slide)}: cannot read the tile at level-0 ({x}, {y}), level {grid.level} "
                         f"({type(exc).__name__}: {exc})") from exc
    return rgba_to_rgb(np.asarray(region))


def _where(slide) -> str:
    return str(getattr(slide, "_filename", None) or "slide")


@lru_cache(maxsize=1)
def _openslide_lowlevel():
    """(lowlevel, _convert) of openslide-python when importable, else None (plain reads then); imported on
    first read, not with this module."""
    try:
        from openslide import _convert, lowlevel
    except (ImportError, OSError):
        return None
    return (lowlevel, _convert) if hasattr(lowlevel, "_read_region") and hasattr(_convert, "argb2rgba") else None


def region_rgba(slide, x: int, y: int, level: int, w: int, h: int, buf: np.ndarray | None = None) -> np.ndarray:
    """RGBA uint8 [h,w,4] of a region, pixel for pixel what slide.read_region gives, without building a PIL
    image: an OpenSlide is read into `buf` (uint32, >= w*h; the result is a view of it, valid until the next
    read), a PlainTiffSlide through read_region_rgba, anything else through read_region."""
    native = getattr(slide, "read_region_rgba", None)
    if native is not None:
        return native((x, y), level, (w, h))
    osr = getattr(slide, "_osr", None)
    low = _openslide_lowlevel() if osr is not None else None
    if osr is None or low is None:
        return np.asarray(slide.read_region((x, y), level, (w, h)))
    if buf is None or buf.size < w * h:
        buf = np.empty(w * h, dtype=np.uint32)
    out = buf[: w * h]
    low[0]._read_region(osr, out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x, y, level, w, h)
    low[1].argb2rgba(out)  # premultiplied ARGB -> RGBA, in place, as openslide-python does
    return out.view(np.uint8).reshape(h, w, 4)


MAX_STRIP_PX = 2048  # widest region read at once, in px of the read level (a tile row is cut from it)
RESIZE_CHUNK_BYTES = 2 * 2**20  # tiles area-resized together: about this much float32 input at a time


def level_origins(slide, level: int, coords_level0: np.ndarray) -> np.ndarray | None:
    """Integer top-left (x, y) at `level` [T,2] of level-0 coords as the reader maps them, or None when a
    tile would start between two pixels of the level (OpenSlide then interpolates): such tiles are read one
    by one, so the tiles cut from a strip are those read_region gives."""
    down = float(slide.level_downsamples[level])
    c = np.asarray(coords_level0, dtype=np.float64)
    if hasattr(slide, "read_region_rgba"):  # PlainTiffSlide: int(x // down), as its read_region
        return np.floor_divide(c, down).astype(np.int64)
    lc = c / down  # OpenSlide: x / downsample in double precision
    return lc.astype(np.int64) if np.array_equal(lc, np.rint(lc)) else None


def strip_runs(origins: np.ndarray, read: int, max_px: int = MAX_STRIP_PX) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive tiles that one region read covers: same row, left to right, gaps of
    at most one tile, at most max_px wide."""
    runs, s = [], 0
    x, y = origins[:, 0], origins[:, 1]
    for i in range(1, len(origins)):
        if y[i] != y[s] or not 0 < x[i] - x[i - 1] <= 2 * read or x[i] + read - x[s] > max_px:
            runs.append((s, i))
            s = i
    if len(origins):
        runs.append((s, len(origins)))
    return runs


def _any_clear(rgba: np.ndarray) -> bool:
    """Whether any pixel of RGBA uint8 [h,w,4] is fully transparent (a uint32 minimum when contiguous: alpha
    is the high byte of a little-endian RGBA word)."""
    if rgba.flags.c_contiguous:
        return bool(rgba.view("<u4").min(initial=0xFFFFFFFF) < 1 << 24)
    return bool((rgba[..., 3] == 0).any())


def area_resize_batch(tiles: np.ndarray, size: int) -> np.ndarray:
    """area_resize of every tile [B,h,w,c] to [B,size,size,c] in two sparse products for the batch: the same
    weights summed in the same order, so value for value what area_resize gives tile by tile."""
    n, h, w, c = tiles.shape
    k = h // size
    if h == w == size * k and k in (2, 4, 8):
        # a power-of-two factor: every weight is 1/k, every partial sum exact in float32, so the block mean
        # equals the sparse products value for value (tested)
        inv = np.float32(1.0 / (k * k))
        out = np.empty((n, size, size, c), dtype=np.uint8)
        total = np.empty((n, size, size), dtype=np.uint16)  # <= 64 * 255: no overflow
        mean = np.empty((n, size, size), dtype=np.float32)
        for ch in range(c):  # channel by channel: long inner loops
            plane = tiles[..., ch]
            np.add(plane[:, 0::k, 0::k], plane[:, 0::k, 1::k], out=total, dtype=np.uint16)
            for dy in range(k):
                for dx in range(2 if dy == 0 else 0, k):
                    total += plane[:, dy::k, dx::k]
            np.multiply(total, inv, out=mean)
            out[..., ch] = np.rint(mean, out=mean)
        return out
    wy, wx = _area_weights(size, h), _area_weights(size, w)
    out = np.empty((n, size, size, c), dtype=np.uint8)
    step = max(1, RESIZE_CHUNK_BYTES // (h * w * c * 4))  # float32 temporaries stay near RESIZE_CHUNK_BYTES
    for s in range(0, n, step):
        part = tiles[s : s + step]
        b = len(part)
        x = wy @ part.transpose(1, 0, 2, 3).reshape(h, b * w * c).astype(np.float32)  # [size_y, (b, w, c)]
        x = x.reshape(size, b, w, c).transpose(2, 1, 0, 3).reshape(w, b * size * c)  # [w, (b, size_y, c)]
        y = (wx @ x).reshape(size, b, size, c).transpose(1, 2, 0, 3)  # [b, size_y, size_x, c]
        out[s : s + b] = np.clip(np.rint(y), 0, 255)
    return out


class _TileReader:
    """Reads a grid's tiles a row strip at a time; after a failed read it reopens the slide (OpenSlide refuses
    every read after its first error) and reads the strip's tiles one by one to name the damaged tile."""

    def __init__(self, slide, grid: TileGrid) -> None:
        self.slide, self.grid = slide, grid
        self.read = grid.read_size or grid.tile_size
        native = getattr(slide, "_osr", None) is not None and _openslide_lowlevel() is not None
        # the OpenSlide read buffer, reused by every read (other readers return their own arrays)
        self.buf = np.empty(max(MAX_STRIP_PX, self.read) * self.read, dtype=np.uint32) if native else None
        self.opened: list = []

    def batch(self, coords: np.ndarray) -> np.ndarray:
        """RGB uint8 [B,tile,tile,3] of the tiles at level-0 coords [B,2]."""
        r = self.read
        raw = np.empty((len(coords), r, r, 3), dtype=np.uint8)
        origins = level_origins(self.slide, self.grid.level, coords)
        if origins is None:
            for i, (x, y) in enumerate(coords):
                raw[i] = _read_raw_tile(self.slide, self.grid, int(x), int(y))
        else:
            for s, e in strip_runs(origins, r):
                self._strip(coords[s:e], origins[s:e, 0] - origins[s, 0], raw[s:e])
        return raw if r == self.grid.tile_size else area_resize_batch(raw, self.grid.tile_size)

    def _strip(self, coords: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
        """Read one strip covering tiles at level-0 coords (x offsets at the level) and cut them into out."""
        r = self.read
        try:
            strip = region_rgba(self.slide, int(coords[0, 0]), int(coords[0, 1]), self.grid.level,
                                int(offsets[-1]) + r, r, self.buf)
        except Exception:  # a damaged tile somewhere in the strip: find which, tile by tile
            self._locate(coords, out)
            return
        n = len(offsets)
        if np.array_equal(offsets, np.arange(n) * r):  # adjacent tiles: the strip is the tiles side by side
            cut = [(strip.reshape(r, n, r, 4).transpose(1, 0, 2, 3), slice(None))]
        else:
            cut = [(strip[:, off : off + r], k) for k, off in enumerate(offsets)]
        for src, dst in cut:
            for c in range(3):  # channel by channel: a long inner loop (4.4x faster than [..., :3] at once)
                out[dst, ..., c] = src[..., c]
        if _any_clear(strip):
            clear = strip[..., 3] == 0
            for k, off in enumerate(offsets):
                out[k][clear[:, off : off + r]] = 255  # outside the scanned area: white, as rgba_to_rgb

    def _locate(self, coords: np.ndarray, out: np.ndarray) -> None:
        """Read the tiles one by one on a fresh handle: SlideError names the first that fails; when none
        fails (the damage lay between them) the tiles are kept and reading goes on with the fresh handle."""
        if getattr(self.slide, "_osr", None) is not None:
            from imaging.slide import open_slide

            self.slide = open_slide(_where(self.slide))
            self.opened.append(self.slide)
        for k, (x, y) in enumerate(coords):
            out[k] = _read_raw_tile(self.slide, self.grid, int(x), int(y))

    def close(self) -> None:
        """Close the handles this reader opened (never the caller's)."""
        for s in self.opened:
            s.close()
        self.opened = []


PREFETCH_BATCHES = 2  # batches iter_tiles' reader thread reads ahead (depth + 2 batches alive at most)


def prefetch(batches: Iterator[T], depth: int = PREFETCH_BATCHES, name: str = "prefetch") -> Iterator[T]:
    """The items of `batches`, in order, produced by one background thread up to `depth` items ahead of the
    consumer (so reading the next strip overlaps the encoder: OpenSlide, numpy and torch release the GIL);
    at most depth + 2 items are alive at once (queued, being made, being used).

    An exception raised by `batches` is re-raised here, at the item where it occurred (a SlideError keeps its
    message naming the slide and tile). When the consumer stops early (break, exception, close) the thread is
    told to stop and joined before this generator returns, so the caller may close the slide right after.
    depth <= 0 iterates in the calling thread.
    """
    if depth <= 0:
        yield from batches
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in batches:
                if not put((None, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((exc, None))
            return
        finally:
            close = getattr(batches, "close", None)
            if close is not None and stop.is_set():
                close()  # a generator's own finally (e.g. closing its reader) runs in this thread
        put((None, done))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            exc, item = items.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # free the queue so a blocked put sees the stop at once
            try:
                items.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def iter_tiles(
    slide: "openslide.OpenSlide", grid: TileGrid, batch_size: int = 64, prefetch_batches: int = PREFETCH_BATCHES
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the grid's tiles in batches: (coords_level0 int64 [B,2], RGB uint8 [B,tile,tile,3]).

    The tiles of one grid row are cut from one region read (numpy views, no PIL image per tile, one reused
    buffer), value for value the tiles read_tile gives; a tile that cannot be decoded raises SlideError
    naming the slide, the tile's level-0 coordinates and its level. A reader thread reads up to
    `prefetch_batches` batches ahead of the consumer (``prefetch``; 0 reads in the calling thread); the
    slide is not touched once this generator has returned or been closed.
    """
    yield from prefetch(_read_batches(slide, grid, batch_size), depth=prefetch_batches, name="iter_tiles")


def _read_batches(slide, grid: TileGrid, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """iter_tiles' batches, read in the calling thread."""
    reader = _TileReader(slide, grid)
    try:
        for start in range(0, len(grid), batch_size):
            coords = grid.coords_level0[start : start + batch_size]
            yield coords, reader.batch(coords)
    finally:
        reader.close()


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
