"""CT series in Hounsfield units and simple HU-threshold masks (body, lung field)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from fusion.errors import DicomSeriesError
from imaging.dicom_series import read_dicom_series
from imaging.volume import Volume

BODY_HU_THRESHOLD = -500.0
LUNG_HU_THRESHOLD = -400.0


def read_ct(directory: str | Path) -> Volume:
    """Read a CT DICOM series into a Volume in HU (DicomSeriesError if the series is not CT)."""
    volume = read_dicom_series(directory)
    if volume.meta.get("modality") != "CT":
        raise DicomSeriesError(f"{directory}: DICOM tag Modality is {volume.meta.get('modality')}, expected CT")
    if volume.units != "HU":
        raise DicomSeriesError(f"{directory}: CT series has units {volume.units}, expected HU")
    return volume


def _fill_holes_per_slice(mask: np.ndarray, slab: int = 16) -> np.ndarray:
    """Fill 2D holes in every axial slice (a 3D fill misses cavities open at the scan ends): the background
    components (4-connected within a slice) that do not reach the slice's edge. The same voxels as
    ndimage.binary_fill_holes with in-plane connectivity, by one labelling per slab of slices instead of a
    dilation iterated to convergence (seconds, not tens of seconds, on a 512x512x300 CT; small temporaries)."""
    mask = np.asarray(mask, dtype=bool)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # in-plane connectivity only
    out = np.empty(mask.shape, dtype=bool)
    for k in range(0, mask.shape[0], slab):
        labels, n = ndimage.label(~mask[k:k + slab], structure=structure)
        reaches_edge = np.zeros(n + 1, dtype=bool)
        for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
            reaches_edge[edge] = True
        reaches_edge[0] = False  # label 0: the mask itself
        out[k:k + slab] = ~reaches_edge[labels]
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean mask (empty mask stays empty)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    flat = labels.reshape(-1)  # bincount by chunks: it copies int32 labels to int64, twice the grid at once
    sizes = sum(np.bincount(flat[i:i + (1 << 22)], minlength=n + 1) for i in range(0, flat.size, 1 << 22))
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def body_mask(hu: np.ndarray, threshold_hu: float = BODY_HU_THRESHOLD) -> np.ndarray:
    """Patient body: largest component above `threshold_hu` (HU), internal air (lungs) filled per slice."""
    return _fill_holes_per_slice(_largest_component(np.asarray(hu) > threshold_hu))


def lung_mask(hu: np.ndarray, threshold_hu: float = LUNG_HU_THRESHOLD) -> np.ndarray:
    """Lung air: voxels below `threshold_hu` (HU) inside the body (air outside the patient excluded)."""
    hu = np.asarray(hu)
    return body_mask(hu) & (hu < threshold_hu)


def lung_field(hu: np.ndarray, threshold_hu: float = LUNG_HU_THRESHOLD) -> np.ndarray:
    """Lung field: lung air with enclosed soft-tissue (nodules, vessels) filled in, per axial slice."""
    return _fill_holes_per_slice(lung_mask(hu, threshold_hu))
