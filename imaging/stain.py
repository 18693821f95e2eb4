"""Macenko stain normalisation (Macenko et al. 2009): estimate H&E optical-density vectors, map to a target."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from fusion.errors import SlideError
from imaging.slide import slide_mpp
from imaging.tiling import tissue_fraction
from imaging.tissue import rgba_to_rgb, saturation, tissue_mask

if TYPE_CHECKING:  # pragma: no cover
    import openslide

IO = 240.0  # transmitted light intensity of glass (uint8 scale)
# The usual Macenko reference (rows: hematoxylin, eosin unit OD vectors over R, G, B) and 99th-percentile
# concentrations, as used by the reference Macenko implementations (e.g. schaugf/HEnorm_python, staintools).
REFERENCE_STAIN_MATRIX = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], dtype=np.float64)
REFERENCE_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308], dtype=np.float64)


def rgb_to_od(rgb: np.ndarray, io: float = IO) -> np.ndarray:
    """Optical density OD = -ln((I + 1) / io) per channel of RGB uint8 [...,3]; float64, same shape.
    uint8 input is looked up in a 256-entry table of the same formula (a gather, not a log per value)."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return _od_table(float(io))[rgb]
    return -np.log((np.asarray(rgb, dtype=np.float64) + 1.0) / io)


@lru_cache(maxsize=8)
def _od_table(io: float) -> np.ndarray:
    """OD of each uint8 value 0..255 (float64 [256], read-only): the formula of rgb_to_od."""
    table = -np.log((np.arange(256, dtype=np.float64) + 1.0) / io)
    table.flags.writeable = False
    return table


def od_to_rgb(od: np.ndarray, io: float = IO) -> np.ndarray:
    """Inverse of rgb_to_od, clipped to uint8."""
    return np.clip(np.rint(io * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


def macenko_stain_matrix(
    rgb_pixels: np.ndarray, alpha: float = 1.0, beta: float = 0.15, io: float = IO
) -> tuple[np.ndarray, np.ndarray]:
    """Stain matrix [2,3] (rows H then E, unit OD vectors) and 99th-percentile concentrations [2] of RGB pixels.

    Pixels with any channel OD below beta (glass) are ignored; the stain vectors are the alpha / (100 - alpha)
    percentile angles in the plane of the two largest OD eigenvectors. The vector with the larger red OD
    (hematoxylin absorbs red) comes first.
    """
    od = rgb_to_od(np.asarray(rgb_pixels).reshape(-1, 3), io)
    od_hat = od[(od >= beta).all(axis=1)]
    if len(od_hat) < 10:
        raise ValueError(f"only {len(od_hat)} stained pixels (OD >= {beta}); cannot estimate a stain matrix")
    _, eigvecs = np.linalg.eigh(np.cov(od_hat.T))
    plane = eigvecs[:, [1, 2]]  # two largest eigenvalues (eigh sorts ascending)
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = od_hat @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])
    stains = stains * np.where(stains.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    conc = concentrations(od, stains)
    max_c = np.percentile(conc, 99, axis=0)
    return stains, max_c


def concentrations(od: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """Least-squares stain concentrations [N,2] of optical densities [N,3] given a stain matrix [2,3]."""
    return od @ np.linalg.pinv(stain_matrix)


def mean_concentrations(tiles: np.ndarray, stain_matrix: np.ndarray, io: float = IO) -> np.ndarray:
    """Mean stain concentrations per tile [B,2] of RGB uint8 tiles [B,H,W,3]: the mean over each tile's
    pixels of concentrations(rgb_to_od(pixel)). Concentrations are linear in OD, so the mean OD of each
    channel is enough: each channel's OD is looked up in the 256-entry table and summed per tile in float64
    (one float64 plane of the batch at a time), equal to the per-pixel route up to float rounding (~1e-15)."""
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"expected RGB uint8 tiles [B,H,W,3], got {tiles.dtype} {tiles.shape}")
    b = len(tiles)
    pixels = tiles.reshape(b, -1, 3)
    table = _od_table(float(io))
    mean_od = np.empty((b, 3), dtype=np.float64)
    for c in range(3):
        mean_od[:, c] = np.take(table, pixels[..., c]).sum(axis=1)
    mean_od /= max(pixels.shape[1], 1)
    return mean_od @ np.linalg.pinv(stain_matrix)


@dataclass
class StainNormalizer:
    """Macenko normaliser mapping a source stain matrix onto a target (default: the standard H&E reference)."""

    target_stain_matrix: np.ndarray = field(default_factory=lambda: REFERENCE_STAIN_MATRIX.copy())
    target_max_concentrations: np.ndarray = field(default_factory=lambda: REFERENCE_MAX_CONCENTRATIONS.copy())
    source_stain_matrix: np.ndarray | None = None
    source_max_concentrations: np.ndarray | None = None
    alpha: float = 1.0
    beta: float = 0.15
    io: float = IO

    def fit(self, rgb_pixels: np.ndarray) -> "StainNormalizer":
        """Set the target stain matrix and concentrations from RGB uint8 pixels [...,3] of a reference image."""
        self.target_stain_matrix, self.target_max_concentrations = macenko_stain_matrix(
            rgb_pixels, self.alpha, self.beta, self.io
        )
        return self

    def fit_source(self, rgb_pixels: np.ndarray) -> "StainNormalizer":
        """Set the source (slide) stain matrix from RGB uint8 tissue pixels [...,3]."""
        self.source_stain_matrix, self.source_max_concentrations = macenko_stain_matrix(
            rgb_pixels, self.alpha, self.beta, self.io
        )
        return self

    def with_source(self, stain_matrix: np.ndarray, max_concentrations: np.ndarray) -> "StainNormalizer":
        """A copy of this normaliser with the given source stain matrix [2,3] and concentrations [2]."""
        return StainNormalizer(
            self.target_stain_matrix, self.target_max_concentrations,
            np.asarray(stain_matrix, dtype=np.float64), np.asarray(max_concentrations, dtype=np.float64),
            self.alpha, self.beta, self.io,
        )

    def transform(self, tiles: np.ndarray) -> np.ndarray:
        """Normalise RGB uint8 tiles [...,3] (a batch [B,H,W,3] at once) to the target stain; same shape, uint8.

        Uses the source stain matrix if one was set (a slide-level estimate), otherwise estimates it from
        the pixels passed in.
        """
        tiles = np.asarray(tiles)
        if self.source_stain_matrix is None:
            src, src_max = macenko_stain_matrix(tiles, self.alpha, self.beta, self.io)
        else:
            src, src_max = self.source_stain_matrix, self.source_max_concentrations
        # concentrations = OD pinv(src), rescaled, back to OD with the target: one 3x3 map in OD space
        scale = self.target_max_concentrations / np.maximum(src_max, 1e-6)
        od_map = ((np.linalg.pinv(src) * scale) @ self.target_stain_matrix).astype(np.float32)
        lut = rgb_to_od(np.arange(256), self.io).astype(np.float32)  # uint8 -> OD lookup
        od_in = [np.take(lut, tiles[..., j]) for j in range(3)]  # planar: numpy is slow over a trailing axis of 3
        out = np.empty(tiles.shape, dtype=np.uint8)
        od, term = np.empty(tiles.shape[:-1], dtype=np.float32), np.empty(tiles.shape[:-1], dtype=np.float32)
        for k in range(3):  # float32 in place: two planes of the batch, whatever the channel
            np.multiply(od_in[0], od_map[0, k], out=od)
            od += np.multiply(od_in[1], od_map[1, k], out=term)
            od += np.multiply(od_in[2], od_map[2, k], out=term)
            chan = np.exp(np.negative(od, out=od), out=od)
            chan *= np.float32(self.io)
            chan -= 1.0
            np.clip(chan, 0, 255, out=chan)
            out[..., k] = np.rint(chan, out=chan)
        return out


def stain_level(slide: "openslide.OpenSlide", stain_mpp: float = 1.0) -> int:
    """Pyramid level whose mpp is closest to stain_mpp (um/px): coarse, yet nuclei still span a few pixels."""
    mpp0 = slide_mpp(slide)
    level_mpp = mpp0 * np.asarray(slide.level_downsamples, dtype=np.float64)
    return int(np.argmin(np.abs(np.log(level_mpp / stain_mpp))))


def sample_tissue_pixels(
    slide: "openslide.OpenSlide",
    level: int | None = None,
    max_pixels: int = 200_000,
    chunk_px: int = 512,
    max_chunks: int = 64,
    min_saturation: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Up to max_pixels RGB uint8 tissue pixels [N,3] sampled from up to max_chunks chunk_px-square reads.

    level defaults to stain_level(slide) (about 1 um/px, the usual tiling resolution); pixels count as
    tissue when their saturation exceeds min_saturation (grey glass and white background do not). Chunks
    are drawn at random among those the low-resolution tissue mask marks, so a large slide is never read
    whole.
    """
    if level is None:
        level = stain_level(slide)
    rng = np.random.default_rng(seed)
    width, height = slide.level_dimensions[level]
    down = float(slide.level_downsamples[level])
    xs, ys = np.meshgrid(np.arange(0, width, chunk_px), np.arange(0, height, chunk_px))
    chunks = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.int64)  # level px
    mask, mask_down = tissue_mask(slide)
    frac = tissue_fraction(mask, mask_down, (chunks * down).astype(np.int64), int(round(chunk_px * down)))
    chunks = chunks[frac > 0] if (frac > 0).any() else chunks
    if len(chunks) > max_chunks:
        chunks = chunks[np.sort(rng.choice(len(chunks), max_chunks, replace=False))]
    per_chunk = max(1, int(np.ceil(max_pixels / len(chunks))))
    picked = []
    for x, y in chunks:
        size = (int(min(chunk_px, width - x)), int(min(chunk_px, height - y)))
        try:
            region = slide.read_region((int(x * down), int(y * down)), level, size)
        except Exception as exc:  # openslide.OpenSlideError
            raise SlideError(f"{getattr(slide, '_filename', 'slide')}: cannot read level {level} ({exc})") from exc
        rgb = rgba_to_rgb(np.asarray(region)).reshape(-1, 3)
        rgb = rgb[saturation(rgb) > min_saturation]
        if len(rgb) > per_chunk:
            rgb = rgb[rng.choice(len(rgb), per_chunk, replace=False)]
        picked.append(rgb)
    return np.concatenate(picked) if picked else np.empty((0, 3), dtype=np.uint8)


def slide_stain_matrix(
    slide: "openslide.OpenSlide", level: int | None = None, max_pixels: int = 200_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A slide's Macenko stain matrix [2,3] (H, E) and max concentrations [2] from sampled tissue pixels."""
    pixels = sample_tissue_pixels(slide, level=level, max_pixels=max_pixels, seed=seed)
    try:
        return macenko_stain_matrix(pixels)
    except ValueError as exc:
        where = getattr(slide, "_filename", "slide")
        raise SlideError(f"{where}: no stained tissue to estimate stains ({exc})") from exc
