"""Quantitative tumour phenotypes from CT (HU) and PET (SUVbw on the CT grid): volume, diameter, SUV, MTV, TLG."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusion.errors import DicomSeriesError
from imaging.ct import lung_field
from imaging.volume import Volume

SOFT_TISSUE_HU = -300.0
SUV_PEAK_VOLUME_ML = 1.0
PET_SEARCH_MARGIN_MM = 10.0
_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


def segment_lung_tumour(ct: Volume, soft_tissue_hu: float = SOFT_TISSUE_HU, min_voxels: int = 5) -> np.ndarray:
    """Largest soft-tissue (HU > `soft_tissue_hu`) component inside the lung field not touching the chest wall."""
    if ct.units != "HU":
        raise ValueError(f"segment_lung_tumour needs a CT volume in HU, got units {ct.units}")
    hu = ct.array
    field = lung_field(hu)
    soft = hu > soft_tissue_hu
    candidates = soft & field
    labels, n = ndimage.label(candidates, structure=_CONNECTIVITY)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    # Soft tissue outside the lung field is chest wall / mediastinum; components next to it are pleural.
    wall_nbhd = ndimage.binary_dilation(soft & ~field, structure=_CONNECTIVITY)
    touching = np.unique(labels[wall_nbhd & candidates])
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[touching] = 0
    best = int(np.argmax(sizes))
    if sizes[best] < min_voxels:
        return np.zeros(hu.shape, dtype=bool)
    return labels == best


def pet_tumour_mask(suv: Volume, fraction: float = 0.4, search_mask: np.ndarray | None = None) -> np.ndarray:
    """Connected component holding SUVmax (within `search_mask` if given) with SUV >= fraction * SUVmax."""
    if suv.units != "SUVbw":
        raise ValueError(f"pet_tumour_mask needs a volume in SUVbw, got units {suv.units}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    values = suv.array
    searched = values if search_mask is None else np.where(search_mask, values, -np.inf)
    peak_index = np.unravel_index(int(np.argmax(searched)), values.shape)
    suv_max = float(values[peak_index])
    if not suv_max > 0:
        return np.zeros(values.shape, dtype=bool)
    labels, _ = ndimage.label(values >= fraction * suv_max, structure=_CONNECTIVITY)
    return labels == labels[peak_index]


def tumour_centroid_mm(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """Centre of mass of a voxel mask in LPS mm (x, y, z); NaN when the mask is empty."""
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    idx = np.argwhere(mask)
    if idx.size == 0:
        return np.full(3, np.nan)
    return volume.world_coords(idx.mean(axis=0))


def _sphere_offsets(spacing_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Integer voxel offsets (k, j, i) whose centres lie within `radius_mm` of the origin."""
    half = np.ceil(radius_mm / np.asarray(spacing_mm)).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    dist = np.linalg.norm(offsets * np.asarray(spacing_mm), axis=1)
    return offsets[dist <= radius_mm]


def suv_peak(suv: Volume, mask: np.ndarray, volume_ml: float = SUV_PEAK_VOLUME_ML) -> float:
    """Highest mean SUV in a sphere of `volume_ml` (1 ml: radius 6.2 mm) centred on any voxel of `mask`."""
    if not mask.any():
        return float("nan")
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    offsets = _sphere_offsets(suv.spacing_mm, radius_mm)
    half = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(2 * half + 1), dtype=np.float32)
    kernel[tuple((offsets + half).T)] = 1.0 / len(offsets)
    # Filter only the tumour's bounding box (plus the kernel reach) rather than the whole grid.
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - half, 0)
    hi = np.minimum(idx.max(axis=0) + half + 1, np.asarray(suv.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    means = ndimage.correlate(suv.array[box], kernel, mode="nearest")
    return float(means[mask[box]].max())


def _near_mask(mask: np.ndarray, spacing_mm: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Voxels within `margin_mm` (Euclidean, physical spacing) of a non-empty mask; computed on its bounding box."""
    reach = np.ceil(margin_mm / np.asarray(spacing_mm)).astype(int) + 1
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - reach, 0)
    hi = np.minimum(idx.max(axis=0) + reach + 1, np.asarray(mask.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = np.zeros(mask.shape, dtype=bool)
    near[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_mm) <= margin_mm
    return near


def _same_grid(a: Volume, b: Volume) -> bool:
    """True when both volumes share shape and affine (voxel-for-voxel comparable)."""
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)


def tumour_phenotypes(ct: Volume, suv_on_ct: Volume | None) -> dict[str, float]:
    """CT tumour volume (ml), sphere-equivalent diameter (mm), mean HU; SUVmax, SUVmean, SUVpeak, MTV (ml), TLG.

    PET keys are NaN when `suv_on_ct` is None; otherwise it must already be on the CT grid.
    """
    voxel_ml = ct.voxel_volume_ml
    ct_mask = segment_lung_tumour(ct)
    n_ct = int(ct_mask.sum())
    volume_ml = n_ct * voxel_ml
    out = {
        "ct_tumour_volume_ml": float(volume_ml),
        "ct_tumour_diameter_mm": float(2.0 * (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)),
        "ct_tumour_mean_hu": float(ct.array[ct_mask].mean()) if n_ct else float("nan"),
        "suv_max": float("nan"),
        "suv_mean": float("nan"),
        "suv_peak": float("nan"),
        "mtv_ml": float("nan"),
        "tlg": float("nan"),
    }
    if suv_on_ct is None:
        return out
    if not _same_grid(ct, suv_on_ct):
        raise DicomSeriesError(
            f"series {suv_on_ct.meta.get('series_uid')}: PET is not on the CT grid of series "
            f"{ct.meta.get('series_uid')}; resample_to_reference(pet, ct) first"
        )
    # Look for the PET hot spot within PET_SEARCH_MARGIN_MM of the CT tumour (not the heart or bladder).
    search = _near_mask(ct_mask, ct.spacing_mm, PET_SEARCH_MARGIN_MM) if n_ct else None
    pet_mask = pet_tumour_mask(suv_on_ct, search_mask=search)
    n_pet = int(pet_mask.sum())
    if n_pet == 0:
        return out
    values = suv_on_ct.array
    masked = np.where(search, values, -np.inf) if search is not None else values
    peak_index = np.unravel_index(int(np.argmax(masked)), values.shape)
    mtv_ml = n_pet * voxel_ml
    suv_mean = float(values[pet_mask].mean())
    out.update(
        suv_max=float(values[peak_index]),
        suv_mean=suv_mean,
        suv_peak=suv_peak(suv_on_ct, pet_mask),
        mtv_ml=float(mtv_ml),
        tlg=float(mtv_ml * suv_mean),
    )
    return out
