"""What a slide is (format, vendor, resolution, pyramid, tissue fraction and tile count at a target mpp) and
whether it is whole: every tile of every level decoded, the damaged ones named with level and coordinates."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import SlideError
from imaging.slide import PLAIN_TIFF, detect_slide_format, open_slide, slide_info
from imaging.tiling import tile_grid
from imaging.tissue import mask_thumbnail, tissue_mask_from_rgb


def summarise_slide(
    path: str | os.PathLike,
    tile_size: int = 256,
    target_mpp: float = 0.5,
    min_tissue: float = 0.5,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Describe a slide (JSON-ready): format, vendor, mpp (um/px), objective, levels, tissue fraction of the
    slide area, and the number of tissue tiles of tile_size px at target_mpp; with out_dir, write
    thumbnail.png and tissue_mask.png there (same size) and add their paths."""
    path = Path(path)
    info = slide_info(path)
    with open_slide(path) as slide:
        rgb, down = mask_thumbnail(slide)
        mask = tissue_mask_from_rgb(rgb)
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=target_mpp, min_tissue=min_tissue)
    levels = [{"level": i, "width": w, "height": h, "downsample": d, "mpp": info.mpp * d}
              for i, ((w, h), d) in enumerate(zip(info.level_dimensions, info.level_downsamples))]
    out: dict[str, Any] = {
        "path": str(path),
        "format": detect_slide_format(path) if path.is_file() else "dicom",
        "vendor": info.vendor,
        "mpp": info.mpp,
        "objective_power": info.objective_power,
        "levels": levels,
        "tissue_fraction": float(mask.mean()),
        "target_mpp": float(target_mpp),
        "tile_size": int(tile_size),
        "tile_um": grid.tile_um,
        "read_level": grid.level,
        "n_tiles": len(grid),
    }
    if out_dir is not None:
        out.update(_write_pngs(Path(out_dir), path.stem, rgb, mask))
    return out


def _write_pngs(out_dir: Path, stem: str, rgb: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Write the thumbnail and the tissue mask as PNGs (temp file, then rename); their paths."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, image in (("thumbnail_png", Image.fromarray(rgb)),
                       ("tissue_mask_png", Image.fromarray(mask.astype(np.uint8) * 255))):
        target = out_dir / f"{stem}_{key.removesuffix('_png')}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        image.save(tmp, format="PNG")
        tmp.replace(target)
        paths[key] = str(target)
    return paths


# ------------------------------------------------------------------------------------ integrity
MAX_LISTED = 5  # damaged tiles named in a SlideError message (the rest are counted)


@dataclass(frozen=True)
class DamagedTile:
    """One tile (or strip) of a pyramid level that does not decode: its level, its index in the level's
    TIFF page (-1 when the file is no TIFF), its top-left at the level and at level 0 (px), size and why."""

    level: int
    index: int
    x: int
    y: int
    x0: int
    y0: int
    width: int
    height: int
    reason: str

    def describe(self) -> str:
        """'level 1 tile 9 at level-0 (512, 1024) (256x256 px): reason'."""
        return (f"level {self.level} tile {self.index} at level-0 ({self.x0}, {self.y0}) "
                f"({self.width}x{self.height} px): {self.reason}")


@dataclass
class SlideVerification:
    """What verify_slide found: tiles decoded per level, the damaged ones, and how they were decoded."""

    path: str
    tiles_checked: int
    levels: int
    damaged: list[DamagedTile] = field(default_factory=list)
    decoders: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.damaged

    def message(self) -> str:
        """One line: the slide, the count of damaged tiles and the first MAX_LISTED of them."""
        if self.ok:
            return f"{self.path}: {self.tiles_checked} tiles on {self.levels} levels decode"
        named = "; ".join(d.describe() for d in self.damaged[:MAX_LISTED])
        more = f"; and {len(self.damaged) - MAX_LISTED} more" if len(self.damaged) > MAX_LISTED else ""
        return f"{self.path}: {len(self.damaged)} of {self.tiles_checked} tiles do not decode: {named}{more}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"path": self.path, "ok": self.ok, "tiles_checked": self.tiles_checked, "levels": self.levels,
                "decoders": list(self.decoders), "damaged": [asdict(d) for d in self.damaged]}


def verify_slide(path: str | os.PathLike) -> SlideVerification:
    """Decode every tile of every pyramid level of a slide and report those that fail.

    A TIFF (svs, generic tiled TIFF, plain TIFF) is checked with tifffile: each level page's tiles or strips
    are read from their byte ranges and decoded (beyond the end of the file, empty, a codec error, a wrong
    decoded shape). A slide OpenSlide opens is also read through OpenSlide tile by tile (its level tile
    grid), the decoder feature extraction uses: it treats libjpeg's warnings as errors, so zero-filled or
    truncated JPEG data that tifffile decodes silently is found there. SlideError when the file cannot be
    opened at all.
    """
    path = Path(path)
    vendor = detect_slide_format(path) if path.is_file() else "dicom"
    with open_slide(path) as slide:
        dims = [tuple(int(v) for v in d) for d in slide.level_dimensions]
        downs = [float(d) for d in slide.level_downsamples]
        props = dict(slide.properties)
    found: dict[tuple[int, int, int], DamagedTile] = {}
    decoders, checked = [], 0
    if path.is_file() and _is_tiff(path):
        checked = max(checked, _verify_tiff_tiles(path, dims, downs, found))
        decoders.append("tifffile")
    if vendor != PLAIN_TIFF:
        checked = max(checked, _verify_openslide_tiles(path, dims, downs, props, found))
        decoders.append("openslide")
    damaged = sorted(found.values(), key=lambda d: (d.level, d.y0, d.x0))
    return SlideVerification(str(path), checked, len(dims), damaged, tuple(decoders))


def require_intact_slide(path: str | os.PathLike) -> SlideVerification:
    """verify_slide, raising SlideError naming the damaged tiles (level, level-0 coordinates, reason): the
    ingest check a run makes when its config sets verify_slides."""
    report = verify_slide(path)
    if not report.ok:
        raise SlideError(report.message())
    return report


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _add(found: dict, tile: DamagedTile) -> None:
    """Record a damaged tile once per (level, level-0 position); a second decoder's reason is appended."""
    key = (tile.level, tile.x0, tile.y0)
    old = found.get(key)
    found[key] = tile if old is None else replace(old, reason=f"{old.reason}; {tile.reason}")


def _level_pages(tif, dims: list[tuple[int, int]]) -> dict[int, Any]:
    """Level -> the TIFF page holding it (matched by its width and height; label/macro pages are no level)."""
    out, used = {}, set()
    for level, (w, h) in enumerate(dims):
        for i, page in enumerate(tif.pages):
            if i not in used and int(page.imagewidth) == w and int(page.imagelength) == h:
                out[level] = page
                used.add(i)
                break
    return out


def _verify_tiff_tiles(path: Path, dims, downs, found: dict) -> int:
    """tifffile pass: decode each tile/strip of each level page from its byte range; segments checked."""
    import tifffile

    size, checked = path.stat().st_size, 0
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile's errors on a damaged header / IFD chain
        raise SlideError(f"{path}: TIFF structure unreadable ({exc})") from exc
    with tif:
        for level, page in _level_pages(tif, dims).items():
            for k, (x, y, w, h) in enumerate(_segment_boxes(page)):
                checked += 1
                reason = _decode_segment(tif, page, k, size, (h, w))
                if reason:
                    _add(found, DamagedTile(level, k, x, y, int(round(x * downs[level])),
                                            int(round(y * downs[level])), w, h, f"tifffile: {reason}"))
    return checked


def _segment_boxes(page) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) at the page's level of each tile (row-major) or strip, as the file orders them."""
    width, height = int(page.imagewidth), int(page.imagelength)
    n = len(page.dataoffsets)
    if page.is_tiled:
        tw, tl = int(page.tilewidth), int(page.tilelength)
        across, down = -(-width // tw), -(-height // tl)
        per_plane = across * down
        return [(((k % per_plane) % across) * tw, ((k % per_plane) // across) * tl, tw, tl) for k in range(n)]
    rows = int(page.rowsperstrip or height)
    per_plane = -(-height // rows)
    return [(0, (k % per_plane) * rows, width, min(rows, height - (k % per_plane) * rows)) for k in range(n)]


def _decode_segment(tif, page, k: int, file_size: int, shape: tuple[int, int]) -> str | None:
    """Why segment k of page does not decode (None when it does)."""
    offset, count = int(page.dataoffsets[k]), int(page.databytecounts[k])
    if count == 0:
        return "no data (byte count 0)"
    if offset + count > file_size:
        return f"data at bytes {offset}..{offset + count} lies beyond the end of the file ({file_size} bytes)"
    fh = tif.filehandle
    fh.seek(offset)
    data = fh.read(count)
    try:
        segment = page.decode(data, k, jpegtables=page.jpegtables)[0]
    except Exception as exc:  # imagecodecs / zlib errors on corrupt data
        return f"{type(exc).__name__}: {exc}"
    if segment is None:
        return "decodes to nothing"
    got = tuple(int(v) for v in np.asarray(segment).shape[1:3])
    if got != shape and not (page.is_tiled is False and got[0] >= shape[0]):
        return f"decodes to {got[1]}x{got[0]} px, expected {shape[1]}x{shape[0]}"
    return None


def _verify_openslide_tiles(path: Path, dims, downs, props: dict, found: dict) -> int:
    """OpenSlide pass: read each level tile by tile (its tile grid, else 512 px squares); a failed read is
    recorded and the slide reopened (OpenSlide refuses every read after its first error)."""
    from imaging.tiling import region_rgba

    slide, checked = open_slide(path), 0
    try:
        for level, (width, height) in enumerate(dims):
            tw = int(props.get(f"openslide.level[{level}].tile-width", 512) or 512)
            th = int(props.get(f"openslide.level[{level}].tile-height", 512) or 512)
            across = -(-width // tw)
            for y in range(0, height, th):
                for x in range(0, width, tw):
                    checked += 1
                    box = _inside_box(x, y, min(tw, width - x), min(th, height - y), downs[level])
                    try:
                        region_rgba(slide, *box[:2], level, *box[2:])
                    except Exception as exc:  # openslide.OpenSlideError: a tile that does not decode
                        index = (y // th) * across + x // tw
                        _add(found, DamagedTile(level, index, x, y, int(round(x * downs[level])),
                                                int(round(y * downs[level])), tw, th, f"OpenSlide: {exc}"))
                        slide.close()
                        slide = open_slide(path)
    finally:
        slide.close()
    return checked


def _inside_box(x: int, y: int, w: int, h: int, down: float) -> tuple[int, int, int, int]:
    """(level-0 x, level-0 y, w, h) reading only the tile at level px (x, y, w, h): the tile itself when the
    downsample is whole, else its interior (a fractional start makes OpenSlide interpolate from neighbours)."""
    if float(down).is_integer():
        return int(x * down), int(y * down), w, h
    x0, y0 = int(np.ceil((x + 1) * down)), int(np.ceil((y + 1) * down))
    return x0, y0, max(1, w - 3), max(1, h - 3)
