"""Tissue detection on a low-resolution slide level: Otsu threshold on saturation plus small-object removal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from fusion.errors import SlideError
from imaging.pixels import area_resize, rgba_to_rgb  # noqa: F401 (rgba_to_rgb re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import openslide


MASK_MAX_SIDE = 1024  # px: the tissue mask is computed on a thumbnail no larger than this
CHUNK_PX = 512  # thumbnail reads: side of each region read, in px of the level read (~1 MiB RGBA)


def _where(slide) -> str:
    return str(getattr(slide, "_filename", None) or "slide")


def read_level_rgb(slide: "openslide.OpenSlide", level: int) -> np.ndarray:
    """Read a whole pyramid level as RGB uint8 [H,W,3] (streamed in chunks), transparent pixels set to white."""
    return read_thumbnail(slide, float(slide.level_downsamples[level]))


def read_thumbnail(slide: "openslide.OpenSlide", downsample: float, chunk_px: int = CHUNK_PX) -> np.ndarray:
    """RGB uint8 [H,W,3] of the slide at `downsample` (level-0 px per output px), streamed chunk by chunk.

    Reads the nearest finer pyramid level and area-averages each chunk to the output
    grid, so memory stays at one chunk whatever the slide size.
    """

    downs = np.asarray(slide.level_downsamples, dtype=np.float64)
    finer = np.flatnonzero(downs <= downsample * (1 + 1e-6))
    level = int(finer[np.argmax(downs[finer])]) if len(finer) else 0
    factor = downsample / downs[level]  # level px per output px
    lw, lh = slide.level_dimensions[level]
    out_w, out_h = max(1, int(round(lw / factor))), max(1, int(round(lh / factor)))
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    chunk_w = chunk_h = chunk_px
    strip_rows = getattr(slide, "strip_rows", lambda level: None)(level)
    if strip_rows:  # strips span the whole width: read full-width bands so each strip is decoded once
        chunk_w, chunk_h = lw, max(int(strip_rows), chunk_px * chunk_px // max(lw, 1))
    step_x, step_y = max(1, int(chunk_w // factor)), max(1, int(chunk_h // factor))  # output px per chunk
    for oy in range(0, out_h, step_y):
        for ox in range(0, out_w, step_x):
            ow, oh = min(step_x, out_w - ox), min(step_y, out_h - oy)
            lx0, ly0 = int(round(ox * factor)), int(round(oy * factor))
            lx1, ly1 = min(int(round((ox + ow) * factor)), lw), min(int(round((oy + oh) * factor)), lh)
            loc0 = (int(round(lx0 * downs[level])), int(round(ly0 * downs[level])))
            try:
                region = slide.read_region(loc0, level, (max(lx1 - lx0, 1), max(ly1 - ly0, 1)))
            except Exception as exc:  # openslide.OpenSlideError / SlideError, without importing openslide here
                raise SlideError(f"{_where(slide)}: cannot read level {level} at level-0 {loc0} ({exc})") from exc
            rgb = rgba_to_rgb(np.asarray(region))
            if rgb.shape[:2] != (oh, ow):
                rgb = area_resize(rgb, ow, oh)
            out[oy : oy + oh, ox : ox + ow] = rgb
    return out


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of RGB uint8 [...,3]: (max - min) / max, 0 for black."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # per channel: numpy is slow over a trailing axis of 3
    cmax = np.maximum(np.maximum(r, g), b).astype(np.float32)
    cmin = np.minimum(np.minimum(r, g), b).astype(np.float32)
    return np.divide(cmax - cmin, cmax, out=np.zeros_like(cmax), where=cmax > 0)


def _drop_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Remove 4-connected True components of fewer than min_size pixels."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def tissue_mask(
    slide: "openslide.OpenSlide",
    level: int | None = None,
    min_object_fraction: float = 0.001,
    min_saturation: float = 0.05,
    max_side: int = MASK_MAX_SIDE,
) -> tuple[np.ndarray, float]:
    """Boolean tissue mask [H,W] on a low-resolution image and its downsample (level-0 px per mask px).

    Otsu threshold on HSV saturation (glass is grey/white, stained tissue is coloured), never below
    min_saturation so an empty slide gives an empty mask; connected components smaller than
    min_object_fraction of the image are removed and small holes filled. With `level`, the mask is at that
    pyramid level; by default at the lowest-resolution level, or, when that is wider than max_side px (a
    slide without a pyramid), on a streamed thumbnail of at most max_side px.
    """
    rgb, downsample = mask_thumbnail(slide, level, max_side)
    return tissue_mask_from_rgb(rgb, min_object_fraction, min_saturation), downsample


def mask_thumbnail(slide: "openslide.OpenSlide", level: int | None = None,
                   max_side: int = MASK_MAX_SIDE) -> tuple[np.ndarray, float]:
    """The RGB image tissue_mask works on [H,W,3] and its downsample (level-0 px per px): `level` when
    given, else the lowest-resolution level, or a streamed thumbnail of max_side px when that is wider."""
    if level is not None and not 0 <= level < slide.level_count:
        raise SlideError(f"{_where(slide)}: level {level} outside 0..{slide.level_count - 1}")
    if level is None:
        level = slide.level_count - 1
        if max(slide.level_dimensions[level]) > max_side:
            downsample = max(slide.level_dimensions[0]) / max_side
            return read_thumbnail(slide, downsample), downsample
    return read_level_rgb(slide, level), float(slide.level_downsamples[level])


def tissue_mask_from_rgb(rgb: np.ndarray, min_object_fraction: float = 0.001, min_saturation: float = 0.05) -> np.ndarray:
    """Boolean tissue mask [H,W] of an RGB uint8 thumbnail [H,W,3] (see tissue_mask)."""
    sat = saturation(rgb)
    # Median-filter the saturation so nuclei / JPEG speckle do not fragment the mask.
    sat = ndimage.median_filter(sat, size=3)
    if float(sat.max()) - float(sat.min()) < 1e-6:
        threshold = float(sat.max())
    else:
        threshold = float(threshold_otsu(sat))
    mask = sat > max(threshold, min_saturation)
    min_size = max(int(min_object_fraction * mask.size), 1)
    mask = _drop_small_components(mask, min_size)
    return ~_drop_small_components(~mask, min_size)  # fill small holes
