"""Plain TIFF slides that OpenSlide refuses (stripped, no pyramid) read region by region through tifffile.

``PlainTiffSlide`` offers the small part of the ``openslide.OpenSlide`` interface FusionRx uses
(``level_count``, ``level_dimensions``, ``level_downsamples``, ``properties``, ``read_region``,
``associated_images``, ``close``, context manager), so the tissue, tiling and stain code treat both the
same. Pixels are never loaded whole: an uncompressed contiguous image is memory-mapped, a compressed one
is decoded one strip or tile at a time (tifffile's codec for the page, a small cache of decoded segments).
A compressed image stored as one huge segment cannot be streamed and is refused with a SlideError.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from fusion.errors import SlideError

VENDOR = "plain-tiff"
CACHE_BYTES = 32 * 2**20  # decoded segments kept per level
MAX_SEGMENT_BYTES = 64 * 2**20  # a compressed strip/tile bigger than this would have to be decoded whole


def _mpp_from_resolution(page, path: Path) -> float | None:
    """Level-0 um/px from the TIFF XResolution / ResolutionUnit tags (None when absent or unitless)."""
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    unit = int(tags["ResolutionUnit"].value)
    if not num or not den:
        return None
    px_per_unit = num / den
    if unit == 3:  # centimetre
        return 1e4 / px_per_unit
    if unit == 2:  # inch
        return 25400.0 / px_per_unit
    return None


def _resolution_properties(page) -> dict[str, str]:
    """tiff.XResolution / tiff.YResolution / tiff.ResolutionUnit as OpenSlide names them (absent tags left out)."""
    tags, out = page.tags, {}
    for name in ("XResolution", "YResolution"):
        if name in tags:
            num, den = tags[name].value
            if den:
                out[f"tiff.{name}"] = f"{num / den:.6g}"
    if "ResolutionUnit" in tags:
        unit = int(tags["ResolutionUnit"].value)
        out["tiff.ResolutionUnit"] = {1: "none", 2: "inch", 3: "centimeter"}.get(unit, "unknown")
    return out


class _Level:
    """One image level of a plain TIFF: a 2-D (+ samples) array-like that reads only what is sliced."""

    def __init__(self, page, path: Path, cache_bytes: int) -> None:
        self.path = path
        shape = page.shape
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        samples = int(page.samplesperpixel)
        if page.dtype != np.uint8 or samples not in (1, 3, 4) or page.planarconfig != 1 and samples > 1:
            raise SlideError(
                f"{path}: TIFF page is {page.dtype} with {samples} samples "
                f"(planar config {page.planarconfig}); expected 8-bit grey, RGB or RGBA, interleaved"
            )
        self.samples = samples
        size = path.stat().st_size
        ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts)]
        if not ends or max(ends) > size or min(int(n) for n in page.databytecounts) == 0:
            raise SlideError(f"{path}: TIFF is truncated or incomplete: pixel data ends at byte "
                             f"{max(ends, default=0)}, the file has {size} bytes")
        if page.is_memmappable:
            self.array = np.memmap(path, dtype=page.dtype, mode="r", offset=page.dataoffsets[0],
                                   shape=shape)
            self.streaming = "memmap"
        else:
            largest = max((int(b) for b in page.databytecounts), default=0)
            seg_rows = page.rowsperstrip if not page.is_tiled else page.tilelength
            seg_bytes = int(min(seg_rows, self.height)) * (page.tilewidth if page.is_tiled else self.width) * samples
            if max(largest, seg_bytes) > MAX_SEGMENT_BYTES:
                raise SlideError(
                    f"{path}: compressed TIFF stored in segments of {max(largest, seg_bytes) / 2**20:.0f} MiB "
                    f"({page.compression.name}, {'tiles' if page.is_tiled else f'{page.rowsperstrip} rows per strip'}); "
                    f"cannot stream it (limit {MAX_SEGMENT_BYTES / 2**20:.0f} MiB): rewrite it tiled, e.g. "
                    "`vips tiffsave in.tif out.tif --tile --pyramid`"
                )
            self.streaming = "tiles" if page.is_tiled else "strips"
            self.chunks = (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else \
                (int(min(page.rowsperstrip, self.height)), self.width)
            # segments are decoded one by one with the page's own codec (tifffile's TiffPage.decode: the
            # values zarr gives, at a third of its cost per segment)
            self._page, self._fh = page, page.parent.filehandle
            self._per_row = -(-self.width // self.chunks[1])
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._cached_bytes = 0

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        """Decoded segment (strip or tile) at chunk row cy, column cx, through a small LRU cache."""
        key = (cy, cx)
        hit = self._cache.pop(key, None)
        if hit is None:
            hit = self._decode(cy, cx)
            self._cached_bytes += hit.nbytes
            while self._cache and self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= self._cache.pop(next(iter(self._cache))).nbytes
        self._cache[key] = hit  # most recently used last
        return hit

    def _decode(self, cy: int, cx: int) -> np.ndarray:
        """Segment (cy, cx) decoded, cut to the image: [rows, cols, samples] (edge tiles are stored padded)."""
        ch, cw = self.chunks
        index = cy * self._per_row + cx
        page = self._page
        self._fh.seek(int(page.dataoffsets[index]))
        data = self._fh.read(int(page.databytecounts[index]))
        seg = page.decode(data, index, jpegtables=getattr(page, "jpegtables", None))[0]
        rows, cols = min(ch, self.height - cy * ch), min(cw, self.width - cx * cw)
        return np.asarray(seg).reshape(-1, seg.shape[-2], seg.shape[-1])[:rows, :cols]

    def _read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [y1-y0, x1-x0, samples] inside the image, decoding only the segments that overlap."""
        if self.streaming == "memmap":
            return np.asarray(self.array[y0:y1, x0:x1])
        ch, cw = self.chunks
        out = np.empty((y1 - y0, x1 - x0, self.samples), dtype=np.uint8)
        for cy in range(y0 // ch, (y1 - 1) // ch + 1):
            for cx in range(x0 // cw, (x1 - 1) // cw + 1):
                seg = self._chunk(cy, cx)
                sy0, sx0 = max(y0, cy * ch), max(x0, cx * cw)
                sy1, sx1 = min(y1, cy * ch + seg.shape[0]), min(x1, cx * cw + seg.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = seg[sy0 - cy * ch : sy1 - cy * ch,
                                                                    sx0 - cx * cw : sx1 - cx * cw]
        return out

    def read_rgba(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGBA uint8 [h,w,4] of the box at (x, y); pixels outside the image are transparent (alpha 0)."""
        out = np.zeros((h, w, 4), dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            block = self._read(x0, y0, x1, y1)
        except Exception as exc:  # codec errors from imagecodecs on a corrupt segment
            raise SlideError(f"{self.path}: cannot decode the region at ({x}, {y}) size {w}x{h} ({exc})") from exc
        block = block.reshape(y1 - y0, x1 - x0, self.samples)
        dst = out[y0 - y : y1 - y, x0 - x : x1 - x]
        if self.samples == 1:
            dst[..., :3] = block
            dst[..., 3] = 255
        else:
            dst[..., :3] = block[..., :3]
            dst[..., 3] = block[..., 3] if self.samples == 4 else 255
        return out


class PlainTiffSlide:
    """A non-pyramidal (or tifffile-pyramidal) TIFF read region by region with the OpenSlide interface."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = CACHE_BYTES) -> None:
        """Open `path`; up to cache_bytes of decoded strips/tiles per level are kept (row-major tile reads
        then decode each strip once)."""
        import tifffile

        self._filename = str(path)
        path = Path(path)
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, IndexError on bad files
            raise SlideError(f"{path}: not a readable TIFF ({exc})") from exc
        try:
            pages = [lvl.keyframe for lvl in series.levels] if series.levels else [series.keyframe]
            self._levels = [_Level(p, path, cache_bytes) for p in pages]
        except SlideError:
            self._tif.close()
            raise
        w0 = self._levels[0].width
        self.level_count = len(self._levels)
        self.level_dimensions = tuple((lv.width, lv.height) for lv in self._levels)
        self.level_downsamples = tuple(w0 / lv.width for lv in self._levels)
        self.associated_images: dict = {}
        mpp = _mpp_from_resolution(pages[0], path)
        self.properties = {"openslide.vendor": VENDOR, "tiff.streaming": self._levels[0].streaming,
                           **_resolution_properties(pages[0])}
        if mpp is not None:  # as OpenSlide's generic-tiff; imaging.slide.slide_mpp refuses implausible values
            self.properties["openslide.mpp-x"] = self.properties["openslide.mpp-y"] = f"{mpp:.6g}"

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGBA PIL image of `size` (w, h) px at `level`, top-left `location` in level-0 px (as OpenSlide)."""
        return Image.fromarray(self.read_region_rgba(location, level, size), mode="RGBA")

    def read_region_rgba(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """read_region's pixels as RGBA uint8 [h,w,4] without a PIL image (the tile streamer's path)."""
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self._filename}: level {level} outside 0..{self.level_count - 1}")
        down = self.level_downsamples[level]
        x, y = int(location[0] // down), int(location[1] // down)
        return self._levels[level].read_rgba(x, y, int(size[0]), int(size[1]))

    def strip_rows(self, level: int) -> int | None:
        """Rows per strip of a stripped level (None for tiled or memory-mapped levels)."""
        lv = self._levels[level]
        return lv.chunks[0] if lv.streaming == "strips" else None

    def close(self) -> None:
        """Close the file (memory maps go with it)."""
        self._levels = []
        self._tif.close()

    def __enter__(self) -> "PlainTiffSlide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
