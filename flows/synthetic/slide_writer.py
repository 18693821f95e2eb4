"""Synthetic H&E whole-slide images written as pyramidal tiled JPEG TIFFs that OpenSlide opens.

Colours are made with the Beer-Lambert law from hematoxylin and eosin optical-density vectors, so the
pixels lie in a two-stain plane like a real H&E slide: white glass, eosin-pink stroma inside a tissue
ellipse, hematoxylin-purple nuclei as small elliptical blobs, denser inside a tumour circle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

# Optical-density stain vectors (rows: hematoxylin, eosin): Ruifrok & Johnston's hematoxylin and the eosin of
# the usual Macenko H&E reference, which absorbs some red and blue too (so stroma is pink, not magenta).
HE_STAIN_OD = np.array([[0.65, 0.70, 0.29], [0.2159, 0.8012, 0.5581]], dtype=np.float32)
BACKGROUND_RGB = (240, 240, 240)
STROMA_NUCLEAR_DENSITY = 3.0  # nuclei per 100x100 level-0 px outside the tumour


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth noise field [height, width] float32: a coarse N(0,1) grid bilinearly upsampled by `cell` px."""
    gh, gw = -(-height // cell) + 1, -(-width // cell) + 1
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    # bilinear upsampling as two small interpolation matrices: Ay [H,gh] @ coarse @ Ax^T [gw,W]
    return _interp_matrix(height, gh, cell) @ coarse @ _interp_matrix(width, gw, cell).T


def _interp_matrix(n: int, n_coarse: int, cell: int) -> np.ndarray:
    """Linear-interpolation weights [n, n_coarse] from a coarse grid with spacing `cell` to n samples."""
    pos = np.arange(n, dtype=np.float32) / cell
    i0 = pos.astype(np.int64)
    f = pos - i0
    m = np.zeros((n, n_coarse), dtype=np.float32)
    m[np.arange(n), i0] = 1.0 - f
    m[np.arange(n), np.minimum(i0 + 1, n_coarse - 1)] += f
    return m


def _sample_in_region(rng: np.random.Generator, n: int, inside, box: tuple[float, float, float, float]) -> np.ndarray:
    """Draw n uniform points [n,2] (x, y) inside the region `inside(x, y) -> bool` within box (x0, y0, x1, y1)."""
    out = np.empty((0, 2), dtype=np.float32)
    x0, y0, x1, y1 = box
    while len(out) < n:
        m = max(2 * (n - len(out)), 64)
        pts = np.column_stack([rng.uniform(x0, x1, m), rng.uniform(y0, y1, m)]).astype(np.float32)
        out = np.concatenate([out, pts[inside(pts[:, 0], pts[:, 1])]])
    return out[:n]


def _stamp_nuclei(mask: np.ndarray, centres: np.ndarray, radius_px: float, rng: np.random.Generator) -> None:
    """Set mask True inside randomly rotated elliptical nuclei around `centres` [N,2] (x, y), vectorised."""
    if len(centres) == 0:
        return
    h, w = mask.shape
    rmax = int(np.ceil(radius_px * 1.4)) + 1
    oy, ox = np.mgrid[-rmax:rmax + 1, -rmax:rmax + 1]
    ox, oy = ox.ravel().astype(np.float32), oy.ravel().astype(np.float32)
    n = len(centres)
    ax = radius_px * rng.uniform(0.9, 1.35, n).astype(np.float32)
    ay = radius_px * rng.uniform(0.65, 1.0, n).astype(np.float32)
    th = rng.uniform(0, np.pi, n).astype(np.float32)
    c, s = np.cos(th)[:, None], np.sin(th)[:, None]
    u = c * ox[None] + s * oy[None]
    v = -s * ox[None] + c * oy[None]
    inside = (u / ax[:, None]) ** 2 + (v / ay[:, None]) ** 2 <= 1.0
    cx = np.rint(centres[:, 0]).astype(np.int64)[:, None] + ox.astype(np.int64)[None]
    cy = np.rint(centres[:, 1]).astype(np.int64)[:, None] + oy.astype(np.int64)[None]
    keep = inside & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    mask[cy[keep], cx[keep]] = True


def _downsample2(img: np.ndarray) -> np.ndarray:
    """Halve an image [H,W,C] by 2x2 box averaging (edge-padded to even size)."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h2, w2 = img.shape[0] // 2, img.shape[1] // 2
    return img.reshape(h2, 2, w2, 2, -1).mean(axis=(1, 3), dtype=np.float32)


def render_he(
    *,
    size_px: tuple[int, int],
    tissue_ellipse: tuple[float, float, float, float],
    tumour_circle: tuple[float, float, float],
    nuclear_density: float,
    nuclear_radius_px: float,
    seed: int,
    stain_od: np.ndarray = HE_STAIN_OD,
) -> tuple[np.ndarray, dict]:
    """Render the level-0 H&E-like RGB image [H,W,3] uint8 and the nuclei counts (size_px is (width, height))."""
    rng = np.random.default_rng(seed)
    width, height = int(size_px[0]), int(size_px[1])
    ex, ey, erx, ery = map(float, tissue_ellipse)
    tx, ty, tr = map(float, tumour_circle)

    def in_tissue(x, y):
        return ((x - ex) / erx) ** 2 + ((y - ey) / ery) ** 2 <= 1.0

    def in_tumour(x, y):
        return ((x - tx) ** 2 + (y - ty) ** 2 <= tr**2) & in_tissue(x, y)

    def in_stroma(x, y):
        return in_tissue(x, y) & ~in_tumour(x, y)

    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    tissue = in_tissue(xs, ys)
    tumour = in_tumour(xs, ys)
    tissue_area = float(tissue.sum())
    tumour_area = float(tumour.sum())
    stroma_area = tissue_area - tumour_area

    n_tumour = int(rng.poisson(nuclear_density * tumour_area / 1e4)) if tumour_area > 0 else 0
    n_stroma = int(rng.poisson(STROMA_NUCLEAR_DENSITY * stroma_area / 1e4)) if stroma_area > 0 else 0
    box_t = (tx - tr, ty - tr, tx + tr, ty + tr)
    box_s = (ex - erx, ey - ery, ex + erx, ey + ery)
    nuclei = np.zeros((height, width), dtype=bool)
    _stamp_nuclei(nuclei, _sample_in_region(rng, n_tumour, in_tumour, box_t), nuclear_radius_px, rng)
    _stamp_nuclei(nuclei, _sample_in_region(rng, n_stroma, in_stroma, box_s), nuclear_radius_px, rng)
    nuclei &= tissue

    # stain concentrations per pixel: eosin-rich fibrous stroma, hematoxylin-rich nuclei, textured
    texture = _smooth_noise(rng, height, width, cell=24) * 0.5 + _smooth_noise(rng, height, width, cell=6) * 0.5
    fine = rng.standard_normal((height, width), dtype=np.float32)
    c_h = np.where(tissue, 0.04 + 0.05 * texture, 0.0).astype(np.float32)
    c_e = np.where(tissue, 0.8 + 0.2 * texture + 0.04 * fine, 0.0).astype(np.float32)
    c_h += np.where(tumour, 0.08, 0.0).astype(np.float32)  # tumour cytoplasm slightly more basophilic
    c_h = np.where(nuclei, 0.95 + 0.15 * texture + 0.08 * fine, c_h)
    c_e = np.where(nuclei, 0.18 + 0.05 * texture, c_e)
    c_h = np.maximum(c_h, 0.0, out=c_h)
    c_e = np.maximum(c_e, 0.0, out=c_e)
    # Beer-Lambert per channel on planar [H,W] arrays (a trailing axis of 3 makes numpy loops slow)
    image = np.empty((height, width, 3), dtype=np.uint8)
    noise = 2.0 * fine
    for k in range(3):
        od_k = c_h * stain_od[0, k] + c_e * stain_od[1, k]
        chan = np.exp(-od_k, out=od_k)
        chan *= np.float32(BACKGROUND_RGB[k])
        chan += noise
        np.clip(chan, 0, 255, out=chan)
        image[..., k] = np.rint(chan, out=chan)
    counts = {
        "n_nuclei_tumour": n_tumour,
        "n_nuclei_stroma": n_stroma,
        "tissue_area_px": tissue_area,
        "tumour_area_px": tumour_area,
    }
    return image, counts


def write_synthetic_slide(
    path: str | os.PathLike,
    *,
    size_px: tuple[int, int] = (2048, 2048),
    mpp: float = 0.5,
    tissue_ellipse: tuple[float, float, float, float] | None = None,
    tumour_circle: tuple[float, float, float] | None = None,
    nuclear_density: float = 20.0,
    nuclear_radius_px: float = 5.0,
    seed: int = 0,
    tile_size: int = 256,
    jpeg_quality: int = 90,
    levels: int = 4,
    stain_od: np.ndarray | None = None,
) -> dict:
    """Write a synthetic H&E pyramidal tiled JPEG TIFF (level-0 mpp in um/px) and return the planted truth.

    size_px is (width, height); tissue_ellipse (cx, cy, rx, ry) and tumour_circle (cx, cy, r) are in level-0 px
    (defaults: a centred ellipse and a circle in its upper-left part); nuclear_density is nuclei per 100x100
    level-0 px inside the tumour (stroma gets STROMA_NUCLEAR_DENSITY). stain_od (2x3, rows H and E) lets a
    caller vary the staining between slides.
    """
    width, height = int(size_px[0]), int(size_px[1])
    if tissue_ellipse is None:
        tissue_ellipse = (width / 2, height / 2, 0.38 * width, 0.30 * height)
    if tumour_circle is None:
        tumour_circle = (0.40 * width, 0.45 * height, 0.14 * min(width, height))
    stain = HE_STAIN_OD if stain_od is None else np.asarray(stain_od, dtype=np.float32)
    image, counts = render_he(
        size_px=(width, height),
        tissue_ellipse=tissue_ellipse,
        tumour_circle=tumour_circle,
        nuclear_density=nuclear_density,
        nuclear_radius_px=nuclear_radius_px,
        seed=seed,
        stain_od=stain,
    )

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    level_dimensions = []
    level = image
    with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for i in range(levels):
            if i > 0:
                level = np.clip(np.rint(_downsample2(level.astype(np.float32))), 0, 255).astype(np.uint8)
            level_mpp = mpp * 2**i
            px_per_cm = 1e4 / level_mpp
            tif.write(
                level,
                tile=(tile_size, tile_size),
                compression="jpeg",
                compressionargs={"level": jpeg_quality},
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                description="FusionRx synthetic H&E" if i == 0 else None,
                metadata=None,
                subfiletype=0 if i == 0 else 1,
            )
            level_dimensions.append((level.shape[1], level.shape[0]))
    os.replace(tmp, path)
    return {
        "path": str(path),
        "size_px": (width, height),
        "mpp": float(mpp),
        "levels": int(levels),
        "level_dimensions": level_dimensions,
        "tissue_ellipse": tuple(float(v) for v in tissue_ellipse),
        "tumour_circle": tuple(float(v) for v in tumour_circle),
        "nuclear_density": float(nuclear_density),
        "stroma_nuclear_density": STROMA_NUCLEAR_DENSITY,
        "nuclear_radius_px": float(nuclear_radius_px),
        "background_rgb": BACKGROUND_RGB,
        "stain_od": stain.tolist(),
        "seed": int(seed),
        **counts,
    }
