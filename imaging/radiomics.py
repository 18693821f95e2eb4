"""IBSI 1 features of a ROI: morphology (mesh and voxels), local intensity peaks, intensity statistics,
intensity histogram and intensity-volume histogram (on discretised grey levels).

Names follow the IBSI reference tags (``morph_volume``, ``stat_mean``, ...); lengths in mm, areas mm^2,
volumes mm^3, intensities in the image's units. Definitions: Zwanenburg et al., IBSI reference manual
(arXiv:1612.07003), chapter 3.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, special
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from skimage.measure import marching_cubes

from imaging.volume import Volume, bounding_box

PEAK_VOLUME_ML = 1.0  # IBSI local intensity peak: a 1 cm^3 sphere (radius 6.2035 mm)
_MORAN_MAX_VOXELS = 4000  # Moran's I / Geary's C are O(n^2); skipped above this size


def _check(mask: np.ndarray, volume: Volume) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    if not mask.any():
        raise ValueError("empty ROI mask: no voxel to compute features on")
    return mask


def roi_mesh(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes surface of a mask (zero-padded, iso-level 0.5): vertices [n, 3] in mm and faces [m, 3]."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)  # marching cubes on the ROI's box only; vertices shifted back to the full grid
    start = np.array([s.start for s in box]) if box is not None else np.zeros(3)
    padded = np.pad(mask[box] if box is not None else mask, 1).astype(np.float32)
    spacing = tuple(float(s) for s in spacing_mm)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing)
    return verts + start * np.asarray(spacing), faces


def mesh_volume_area(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Enclosed volume (mm^3, signed tetrahedra from the origin) and surface area (mm^2) of a closed mesh."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    area = float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2.0)
    return volume, area


def _ellipsoid_area(a: float, b: float, c: float, terms: int = 20) -> float:
    """Surface area of an ellipsoid with semi-axes a >= b >= c (IBSI Legendre series)."""
    alpha = np.sqrt(max(0.0, 1.0 - b * b / (a * a)))
    beta = np.sqrt(max(0.0, 1.0 - c * c / (a * a)))
    if alpha * beta == 0:
        return float(4.0 * np.pi * a * b) if alpha == 0 and beta == 0 else float("nan")
    x = (alpha**2 + beta**2) / (2.0 * alpha * beta)
    nu = np.arange(terms + 1)
    series = ((alpha * beta) ** nu / (1.0 - 4.0 * nu**2) * special.eval_legendre(nu, x)).sum()
    return float(4.0 * np.pi * a * b * series)


def _moran_geary(values: np.ndarray, points_mm: np.ndarray) -> tuple[float, float]:
    """Moran's I and Geary's C with inverse-distance weights between voxel centres."""
    n = len(values)
    if n < 2 or n > _MORAN_MAX_VOXELS:
        return float("nan"), float("nan")
    w = 1.0 / pdist(points_mm)  # condensed pairwise weights, each pair once
    dev = values - values.mean()
    i_idx, j_idx = np.triu_indices(n, k=1)
    sum_w = 2.0 * w.sum()
    var = float((dev**2).sum())
    if var == 0:
        return float("nan"), float("nan")
    moran = n / sum_w * 2.0 * float((w * dev[i_idx] * dev[j_idx]).sum()) / var
    geary = (n - 1) / (2.0 * sum_w) * 2.0 * float((w * (values[i_idx] - values[j_idx]) ** 2).sum()) / var
    return moran, geary


def morphology(volume: Volume, mask: np.ndarray) -> dict[str, float]:
    """IBSI morphological features (3D) of `mask` on `volume`; intensity-weighted ones use `volume`'s values."""
    mask = _check(mask, volume)
    spacing = volume.spacing_mm
    verts, faces = roi_mesh(mask, spacing)
    v, area = mesh_volume_area(verts, faces)
    n = int(mask.sum())
    idx = np.argwhere(mask)
    pts = idx * np.asarray(spacing)  # voxel centres in mm along the array axes (isometric to LPS)
    values = volume.array[mask].astype(np.float64)
    out = {
        "morph_volume": v,
        "morph_vol_approx": n * float(np.prod(spacing)),
        "morph_area_mesh": area,
        "morph_av": area / v,
        "morph_comp_1": v / (np.pi**0.5 * area**1.5),
        "morph_comp_2": 36.0 * np.pi * v**2 / area**3,
        "morph_sph_dispr": area / (36.0 * np.pi * v**2) ** (1.0 / 3.0),
        "morph_sphericity": (36.0 * np.pi * v**2) ** (1.0 / 3.0) / area,
        "morph_asphericity": (area**3 / (36.0 * np.pi * v**2)) ** (1.0 / 3.0) - 1.0,
    }
    centre_geom = pts.mean(axis=0)
    centre_int = (pts * values[:, None]).sum(axis=0) / values.sum() if values.sum() != 0 else centre_geom
    out["morph_com"] = float(np.linalg.norm(centre_geom - centre_int))
    hull = ConvexHull(verts)
    out["morph_diam"] = float(pdist(verts[hull.vertices]).max())
    eig = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1] if n > 1 else np.zeros(3)
    major, minor, least = eig
    out.update(
        morph_pca_maj_axis=4.0 * np.sqrt(major),
        morph_pca_min_axis=4.0 * np.sqrt(minor),
        morph_pca_least_axis=4.0 * np.sqrt(least),
        morph_pca_elongation=np.sqrt(minor / major) if major > 0 else float("nan"),
        morph_pca_flatness=np.sqrt(least / major) if major > 0 else float("nan"),
    )
    extent = np.ptp(verts, axis=0)
    aabb_area = 2.0 * (extent[0] * extent[1] + extent[0] * extent[2] + extent[1] * extent[2])
    out["morph_vol_dens_aabb"] = v / float(np.prod(extent))
    out["morph_area_dens_aabb"] = area / float(aabb_area)
    a, b, c = 2.0 * np.sqrt(major), 2.0 * np.sqrt(minor), 2.0 * np.sqrt(least)
    out["morph_vol_dens_aee"] = 3.0 * v / (4.0 * np.pi * a * b * c) if c > 0 else float("nan")
    out["morph_area_dens_aee"] = area / _ellipsoid_area(a, b, c) if c > 0 else float("nan")
    out["morph_vol_dens_conv_hull"] = v / float(hull.volume)
    out["morph_area_dens_conv_hull"] = area / float(hull.area)
    out["morph_integ_int"] = v * float(values.mean())
    out["morph_moran_i"], out["morph_geary_c"] = _moran_geary(values, pts)
    return {k: float(val) for k, val in out.items()}


def _sphere_offsets(spacing_mm: tuple[float, float, float], volume_ml: float) -> np.ndarray:
    """Integer offsets (k, j, i) of the voxels whose centres lie within a sphere of `volume_ml` around a centre."""
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    half = np.floor(radius_mm / np.asarray(spacing_mm)).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    return offsets[np.linalg.norm(offsets * np.asarray(spacing_mm), axis=1) <= radius_mm + 1e-9]


def _convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded convolution by FFT, cropped to `image`'s shape and centred on an odd-sized `kernel`."""
    full = [a + b - 1 for a, b in zip(image.shape, kernel.shape)]
    shape = [fft.next_fast_len(n, real=True) for n in full]
    out = fft.irfftn(fft.rfftn(image, shape) * fft.rfftn(kernel, shape), shape)
    start = [k // 2 for k in kernel.shape]
    return out[tuple(slice(s0, s0 + n) for s0, n in zip(start, image.shape))]


def _sphere_means(volume: Volume, idx: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean over the sphere `offsets` around each voxel of `idx`, using every image voxel (not only the ROI)."""
    half = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(2 * half + 1), dtype=np.float64)
    kernel[tuple((offsets + half).T)] = 1.0
    lo = np.maximum(idx.min(axis=0) - half, 0)
    hi = np.minimum(idx.max(axis=0) + half + 1, np.asarray(volume.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = volume.array[box].astype(np.float64)
    # The box reaches `half` beyond the voxels (clipped to the image), so every sphere voxel is in it or off the image.
    # The kernel is symmetric, so convolution equals correlation; FFT keeps 1 ml spheres of fine voxels cheap.
    sums = _convolve_same(sub, kernel)
    counts = np.rint(_convolve_same(np.ones_like(sub), kernel))
    local = tuple((idx - lo).T)
    return sums[local] / counts[local]


def intensity_peaks(volume: Volume, mask: np.ndarray, volume_ml: float = PEAK_VOLUME_ML) -> dict[str, float]:
    """IBSI local (sphere on the ROI's maximum voxels; highest if several) and global (any ROI voxel) peaks."""
    mask = _check(mask, volume)
    offsets = _sphere_offsets(volume.spacing_mm, volume_ml)
    idx = np.argwhere(mask)
    values = volume.array[mask]
    means = _sphere_means(volume, idx, offsets)
    return {"loc_peak_loc": float(means[values == values.max()].max()), "loc_peak_glob": float(means.max())}


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """IBSI intensity statistics of the ROI's voxel values (biased moments, excess kurtosis, linear percentiles)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no voxel values: empty ROI")
    mean = x.mean()
    dev = x - mean
    m2 = float((dev**2).mean())
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    return {
        "stat_mean": float(mean),
        "stat_var": m2,
        "stat_skew": float((dev**3).mean() / m2**1.5) if m2 > 0 else 0.0,
        "stat_kurt": float((dev**4).mean() / m2**2 - 3.0) if m2 > 0 else 0.0,
        "stat_median": float(median),
        "stat_min": float(x.min()),
        "stat_p10": float(p10),
        "stat_p90": float(p90),
        "stat_max": float(x.max()),
        "stat_iqr": float(p75 - p25),
        "stat_range": float(x.max() - x.min()),
        "stat_mad": float(np.abs(dev).mean()),
        "stat_rmad": float(np.abs(robust - robust.mean()).mean()),
        "stat_medad": float(np.abs(x - median).mean()),
        "stat_cov": float(np.sqrt(m2) / mean) if mean != 0 else float("nan"),
        "stat_qcod": float((p75 - p25) / (p75 + p25)) if (p75 + p25) != 0 else float("nan"),
        "stat_energy": float((x**2).sum()),
        "stat_rms": float(np.sqrt((x**2).mean())),
    }


def discretise(values: np.ndarray, bin_width: float | None = None, minimum: float | None = None) -> np.ndarray:
    """IBSI grey levels 1, 2, ...: fixed bin size `bin_width` from `minimum` (default the ROI minimum).

    Without `bin_width` the values must already be integer grey levels (e.g. the IBSI phantom); ValueError otherwise.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if bin_width is None:
        if not np.all(x == np.round(x)):
            raise ValueError("values are not integer grey levels: give a bin_width (IBSI fixed bin size)")
        return x.astype(np.int64)
    lo = float(x.min()) if minimum is None else float(minimum)
    return (np.floor((x - lo) / bin_width) + 1).astype(np.int64)


def intensity_histogram(levels: np.ndarray) -> dict[str, float]:
    """IBSI intensity-histogram features of discretised grey levels (ih_*) and the intensity-volume histogram (ivh_*)."""
    g = np.asarray(levels, dtype=np.int64).ravel()
    stats = intensity_statistics(g)
    out = {"ih_" + k[5:]: v for k, v in stats.items() if k not in ("stat_energy", "stat_rms")}
    grey = np.arange(g.min(), g.max() + 1)
    counts = np.bincount(g - g.min(), minlength=len(grey)).astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    out["ih_mode"] = float(grey[int(np.argmax(counts))])
    out["ih_entropy"] = float(-(nz * np.log2(nz)).sum())
    out["ih_uniformity"] = float((p**2).sum())
    grad = np.gradient(counts) if len(counts) > 1 else np.zeros(1)  # central inside, one-sided at the ends
    out.update(ih_max_grad=float(grad.max()), ih_max_grad_g=float(grey[int(np.argmax(grad))]),
               ih_min_grad=float(grad.min()), ih_min_grad_g=float(grey[int(np.argmin(grad))]))
    # IVH: volume fraction nu(i) with grey level >= i; intensity fraction gamma(i) over the ROI's range.
    nu = 1.0 - np.concatenate([[0.0], np.cumsum(p)[:-1]])
    gamma = (grey - grey[0]) / (grey[-1] - grey[0]) if len(grey) > 1 else np.zeros(1)
    for x, name in ((0.1, "10"), (0.9, "90")):
        out[f"ivh_v{name}"] = float(nu[np.argmax(gamma >= x)])
        out[f"ivh_i{name}"] = float(grey[np.argmax(nu <= x)]) if np.any(nu <= x) else float(grey[-1] + 1)
    out["ivh_diff_v10_v90"] = out["ivh_v10"] - out["ivh_v90"]
    out["ivh_diff_i10_i90"] = out["ivh_i10"] - out["ivh_i90"]
    return out


def ibsi_features(volume: Volume, mask: np.ndarray, bin_width: float | None = None) -> dict[str, float]:
    """Morphology, local intensity peaks, statistics, intensity histogram and IVH of one ROI (IBSI tags as keys).

    The histogram families need grey levels: `bin_width` discretises (fixed bin size); without it they
    are computed only when the values already are integers, and left out otherwise.
    """
    mask = _check(mask, volume)
    values = volume.array[mask]
    out = {**morphology(volume, mask), **intensity_peaks(volume, mask), **intensity_statistics(values)}
    try:
        out.update(intensity_histogram(discretise(values, bin_width)))
    except ValueError:
        pass  # non-integer intensities and no bin width: no histogram features
    return out
