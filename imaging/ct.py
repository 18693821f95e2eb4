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


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill 2D holes in every axial slice (a 3D fill misses cavities open at the scan ends)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # in-plane connectivity only
    return ndimage.binary_fill_holes(mask, structure=structure)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean mask (empty mask stays empty)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
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
