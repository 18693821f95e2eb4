"""Quantitative tumour phenotypes from CT (HU) and PET (SUVbw on the CT grid): volume, diameter, SUV, MTV, TLG."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from fusion.errors import DicomSeriesError
from imaging.ct import BODY_HU_THRESHOLD, lung_field
from imaging.radiomics import intensity_peaks, mesh_volume_area, roi_mesh
from imaging.volume import Volume, bounding_box

SOFT_TISSUE_HU = -300.0
SUV_PEAK_VOLUME_ML = 1.0
PET_SEARCH_MARGIN_MM = 10.0
_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


def _above_box(array: np.ndarray, threshold: float, chunk: int = 16) -> tuple[slice, ...] | None:
    """Bounding box (padded by 2) of the voxels above `threshold`, slab by slab: no full-grid mask."""
    hits = [(k, bounding_box(array[k:k + chunk] > threshold)) for k in range(0, array.shape[0], chunk)]
    hits = [(k, b) for k, b in hits if b is not None]
    if not hits:
        return None
    lo = [hits[0][0] + hits[0][1][0].start, min(b[1].start for _, b in hits), min(b[2].start for _, b in hits)]
    hi = [hits[-1][0] + hits[-1][1][0].stop, max(b[1].stop for _, b in hits), max(b[2].stop for _, b in hits)]
    return tuple(slice(max(a - 2, 0), min(b + 2, n)) for a, b, n in zip(lo, hi, array.shape))


def _label_sizes(labels: np.ndarray, n: int, chunk: int = 1 << 22) -> np.ndarray:
    """Voxel count of each label 0..n; chunked, as np.bincount copies int32 labels to int64 (2x the grid)."""
    flat = labels.reshape(-1)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        sizes += np.bincount(flat[start:start + chunk], minlength=n + 1)
    return sizes


def _labels_touching(labels: np.ndarray, n: int, wall: np.ndarray) -> np.ndarray:
    """Which of the `n` labels have a voxel 6-adjacent to a `wall` voxel (boolean per label, 0 included): the
    labels under the wall's 6-connected dilation, by six shifted comparisons instead of a dilated grid."""
    touching = np.zeros(n + 1, dtype=bool)
    for axis in range(3):
        size = labels.shape[axis]
        head = tuple(slice(0, size - 1) if a == axis else slice(None) for a in range(3))
        tail = tuple(slice(1, size) if a == axis else slice(None) for a in range(3))
        touching[labels[head][wall[tail]]] = True
        touching[labels[tail][wall[head]]] = True
    return touching


def segment_lung_tumour(ct: Volume, soft_tissue_hu: float = SOFT_TISSUE_HU, min_voxels: int = 5) -> np.ndarray:
    """Largest soft-tissue (HU > `soft_tissue_hu`) component inside the lung field not touching the chest wall.

    Computed on the body's bounding box (voxels above BODY_HU_THRESHOLD, padded by 2): outside it there is no
    body, no lung field and no soft tissue, so every step (components, per-slice hole filling, the wall's
    dilation) gives the same voxels as on the whole grid, at a fraction of the cost on a 512x512 CT."""
    if ct.units != "HU":
        raise ValueError(f"segment_lung_tumour needs a CT volume in HU, got units {ct.units}")
    out = np.zeros(ct.shape, dtype=bool)
    box = _above_box(ct.array, BODY_HU_THRESHOLD) if soft_tissue_hu >= BODY_HU_THRESHOLD else \
        tuple(slice(0, n) for n in ct.shape)
    if box is None:
        return out
    hu = ct.array[box]
    field = lung_field(hu)
    soft = hu > soft_tissue_hu
    wall = soft & ~field  # outside the lung field: chest wall / mediastinum
    soft &= field  # the candidates, in place: one grid less alive
    del field
    cbox = bounding_box(soft, pad=1)  # the candidates' box, reaching the wall voxels next to them
    if cbox is None:
        return out
    labels, n = ndimage.label(soft[cbox], structure=_CONNECTIVITY)
    wall, box = wall[cbox], tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, cbox))
    del soft
    if n == 0:
        return out
    # Components next to the wall are pleural, not a nodule.
    sizes = _label_sizes(labels, n)
    sizes[_labels_touching(labels, n, wall)] = 0
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if sizes[best] >= min_voxels:
        out[box] = labels == best
    return out


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


def suv_peak(suv: Volume, mask: np.ndarray, volume_ml: float = SUV_PEAK_VOLUME_ML) -> float:
    """Highest mean SUV in a sphere of `volume_ml` (1 ml: radius 6.2 mm) centred on any voxel of `mask` (IBSI global peak)."""
    if not np.asarray(mask).any():
        return float("nan")
    return intensity_peaks(suv, mask, volume_ml)["loc_peak_glob"]


def near_mask(mask: np.ndarray, spacing_mm: tuple[float, float, float], margin_mm: float) -> np.ndarray:
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
    search = near_mask(ct_mask, ct.spacing_mm, PET_SEARCH_MARGIN_MM) if n_ct else None
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


MTV_FRACTION = 0.4


def _empty_roi_phenotypes() -> dict[str, float]:
    keys = ("volume_ml", "volume_ml_mesh", "volume_ml_ct", "volume_ml_pet", "max_diameter_mm", "sphericity",
            "ct_mean_hu", "ct_sd_hu", "ct_median_hu", "ct_min_hu", "ct_max_hu", "suv_max", "suv_peak",
            "suv_peak_global", "suv_mean", "suv_sd", "suv_median", "mtv_ml", "tlg")
    return {k: float("nan") for k in keys}


def roi_phenotypes(ct: Volume | None, ct_mask: np.ndarray | None, suv: Volume | None, pet_mask: np.ndarray | None,
                   mtv_fraction: float = MTV_FRACTION) -> dict[str, float]:
    """Phenotypes of one ROI: CT statistics on the CT grid (HU), PET statistics on the PET's own grid (SUVbw).

    volume_ml counts voxels on the CT grid (PET grid without CT); volume_ml_mesh is the IBSI mesh volume
    there. SUVpeak is the IBSI local intensity peak (1 ml sphere on the SUVmax voxel), suv_peak_global
    the highest 1 ml sphere on any ROI voxel. MTV: ROI voxels with SUV >= mtv_fraction * SUVmax (ml);
    TLG = MTV * mean SUV in the MTV (g).
    """
    out = _empty_roi_phenotypes()
    out["mtv_fraction"] = float(mtv_fraction)
    shape_from = None
    if ct is not None and ct_mask is not None and ct_mask.any():
        hu = ct.array[ct_mask].astype(np.float64)
        out.update(volume_ml_ct=float(ct_mask.sum() * ct.voxel_volume_ml), ct_mean_hu=float(hu.mean()),
                   ct_sd_hu=float(hu.std()), ct_median_hu=float(np.median(hu)), ct_min_hu=float(hu.min()),
                   ct_max_hu=float(hu.max()), n_voxels_ct=int(ct_mask.sum()))
        shape_from = (ct, ct_mask)
    if suv is not None and pet_mask is not None and pet_mask.any():
        if suv.units != "SUVbw":
            raise ValueError(f"roi_phenotypes needs the PET in SUVbw, got units {suv.units}")
        values = suv.array[pet_mask].astype(np.float64)
        peaks = intensity_peaks(suv, pet_mask)
        suv_max = float(values.max())
        in_mtv = values >= mtv_fraction * suv_max
        mtv_ml = float(in_mtv.sum() * suv.voxel_volume_ml)
        out.update(volume_ml_pet=float(pet_mask.sum() * suv.voxel_volume_ml), suv_max=suv_max,
                   suv_peak=peaks["loc_peak_loc"], suv_peak_global=peaks["loc_peak_glob"],
                   suv_mean=float(values.mean()), suv_sd=float(values.std()), suv_median=float(np.median(values)),
                   mtv_ml=mtv_ml, tlg=float(mtv_ml * values[in_mtv].mean()), n_voxels_pet=int(pet_mask.sum()))
        shape_from = shape_from or (suv, pet_mask)
    if shape_from is not None:
        volume, mask = shape_from
        verts, faces = roi_mesh(mask, volume.spacing_mm)
        mesh_mm3, area_mm2 = mesh_volume_area(verts, faces)
        hull = ConvexHull(verts)
        out.update(volume_ml=float(mask.sum() * volume.voxel_volume_ml), volume_ml_mesh=mesh_mm3 / 1000.0,
                   max_diameter_mm=float(pdist(verts[hull.vertices]).max()),
                   sphericity=float((36.0 * np.pi * mesh_mm3**2) ** (1.0 / 3.0) / area_mm2))
    return out
