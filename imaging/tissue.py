"""Tissue detection on a low-resolution slide level: Otsu threshold on saturation plus small-object removal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from fusion.errors import SlideError

if TYPE_CHECKING:  # pragma: no cover
    import openslide


def read_level_rgb(slide: "openslide.OpenSlide", level: int) -> np.ndarray:
    """Read a whole (small) pyramid level as RGB uint8 [H,W,3], transparent pixels set to white."""
    width, height = slide.level_dimensions[level]
    try:
        rgba = np.asarray(slide.read_region((0, 0), level, (width, height)))
    except Exception as exc:  # openslide.OpenSlideError, without importing openslide here
        raise SlideError(f"{getattr(slide, '_filename', 'slide')}: cannot read level {level} ({exc})") from exc
    return rgba_to_rgb(rgba)


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Drop alpha from RGBA uint8 [...,4]; fully transparent pixels (outside the scanned area) become white."""
    rgb = np.array(rgba[..., :3], dtype=np.uint8, copy=True)
    rgb[rgba[..., 3] == 0] = 255
    return rgb


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
) -> tuple[np.ndarray, float]:
    """Boolean tissue mask [H,W] at a low-resolution level and its downsample (level-0 px per mask px).

    Otsu threshold on HSV saturation (glass is grey/white, stained tissue is coloured), never below
    min_saturation so an empty slide gives an empty mask; connected components smaller than
    min_object_fraction of the level are removed and small holes filled. level defaults to the
    lowest-resolution level.
    """
    if level is None:
        level = slide.level_count - 1
    if not 0 <= level < slide.level_count:
        raise SlideError(f"{getattr(slide, '_filename', 'slide')}: level {level} outside 0..{slide.level_count - 1}")
    rgb = read_level_rgb(slide, level)
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
    mask = ~_drop_small_components(~mask, min_size)  # fill small holes
    return mask, float(slide.level_downsamples[level])
