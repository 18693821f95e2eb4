"""IBSI 1 texture features of a ROI, computed with MIRP (https://github.com/oncoray/mirp, IBSI-compliant).

Six families, each with every IBSI aggregation, on the volume's own grid (no resampling, no re-segmentation):

=====  ======  ==========================================  =======================================
mirp   family  name pattern (``*`` = feature)              IBSI aggregations
=====  ======  ==========================================  =======================================
cm     GLCM    ``cm_*_d1_{agg}`` (distance 1)              2d_avg, 2d_s_mrg, 2.5d_d_mrg,
rlm    GLRLM   ``rlm_*_{agg}``                             2.5d_v_mrg, 3d_avg, 3d_v_mrg
szm    GLSZM   ``szm_*_{dim}``                             2d, 2.5d, 3d
dzm    GLDZM   ``dzm_*_{dim}``                             2d, 2.5d, 3d
ngt    NGTDM   ``ngt_*_{dim}``                             2d, 2.5d, 3d
ngl    NGLDM   ``ngl_*_d1_a0.0_{dim}`` (distance 1, a=0)   2d, 2.5d, 3d
=====  ======  ==========================================  =======================================

The names are MIRP's (``cm_joint_max_d1_3d_avg``, ``szm_sze_2.5d``, ...) without its discretisation suffix
(``_fbs_w1.0`` / ``_fbn_n32``), which is the caller's ``bin_width`` / ``n_bins``. :func:`reference_tag` maps
a name to the tag of the IBSI reference tables (``cm_joint_max_3D_avg``, ``szm_sze_2_5D``, ...):
``2d_avg`` -> ``2D_avg`` (by slice, averaged), ``2d_s_mrg`` -> ``2D_comb`` (by slice, directions merged),
``2.5d_d_mrg`` -> ``2_5D_avg``, ``2.5d_v_mrg`` -> ``2_5D_comb``, ``3d_avg`` -> ``3D_avg``, ``3d_v_mrg`` ->
``3D_comb``. 2D and 2.5D features work slice by slice along the array's first axis (k).

Discretisation (IBSI 2.7): ``bin_width`` = fixed bin size, lower bound the lowest intensity in the ROI;
``n_bins`` = fixed bin number over the ROI's intensity range. Exactly one of them must be given.
Definitions: Zwanenburg et al., IBSI reference manual (arXiv:1612.07003), chapter 3.6-3.11.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fusion.errors import FusionConfigError, FusionDataError, SegmentationError
from imaging.volume import Volume

FAMILIES = {"cm": "GLCM", "rlm": "GLRLM", "szm": "GLSZM", "dzm": "GLDZM", "ngt": "NGTDM", "ngl": "NGLDM"}
MATRIX_AGGREGATIONS = ("2d_average", "2d_slice_merge", "2.5d_direction_merge", "2.5d_volume_merge",
                       "3d_average", "3d_volume_merge")  # GLCM, GLRLM
ZONE_AGGREGATIONS = ("2d", "2.5d", "3d")  # GLSZM, GLDZM, NGTDM, NGLDM
_REFERENCE_AGG = {"2d_avg": "2D_avg", "2d_s_mrg": "2D_comb", "2.5d_d_mrg": "2_5D_avg", "2.5d_v_mrg": "2_5D_comb",
                  "3d_avg": "3D_avg", "3d_v_mrg": "3D_comb", "2d": "2D", "2.5d": "2_5D", "3d": "3D"}
_DISCRETISATION_SUFFIX = re.compile(r"_(fbs_w[^_]+|fbn_n\d+)$")


def reference_tag(name: str) -> str:
    """IBSI reference-table tag of one of our feature names: ``cm_joint_max_d1_3d_avg`` -> ``cm_joint_max_3D_avg``."""
    base = name.replace("_d1_a0.0_", "_").replace("_d1_", "_")
    for agg in sorted(_REFERENCE_AGG, key=len, reverse=True):
        if base.endswith("_" + agg):
            return base[: -len(agg)] + _REFERENCE_AGG[agg]
    raise FusionConfigError(f"{name!r} is not a texture feature name of imaging.radiomics_texture "
                            f"(expected a suffix among {sorted(_REFERENCE_AGG)})")


def _discretisation(bin_width: float | None, n_bins: int | None) -> dict[str, object]:
    if (bin_width is None) == (n_bins is None):
        raise FusionConfigError("texture_features needs exactly one of bin_width (fixed bin size) or n_bins "
                                f"(fixed bin number), got bin_width={bin_width!r}, n_bins={n_bins!r}")
    if bin_width is not None:
        if isinstance(bin_width, bool) or not isinstance(bin_width, (int, float, np.number)) \
                or not math.isfinite(bin_width) or bin_width <= 0:
            raise FusionConfigError(f"bin_width must be a finite number > 0 (image units), got {bin_width!r}")
        return {"base_discretisation_method": "fixed_bin_size", "base_discretisation_bin_width": float(bin_width)}
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise FusionConfigError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return {"base_discretisation_method": "fixed_bin_number", "base_discretisation_n_bins": int(n_bins)}


def _check_inputs(volume: Volume, mask: np.ndarray) -> np.ndarray:
    if not isinstance(volume, Volume):
        raise FusionDataError(f"texture_features expects an imaging.volume.Volume, got {type(volume).__name__}")
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise SegmentationError(f"ROI mask shape {mask.shape} differs from volume shape {volume.shape} "
                                "(the mask must lie on the volume's own grid)")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise SegmentationError(f"ROI mask must be boolean or 0/1, found values {np.unique(mask)[:5].tolist()}")
        mask = mask.astype(bool)
    if not mask.any():
        raise SegmentationError("empty ROI mask: no voxel to compute texture features on")
    values = volume.array[mask]
    if not np.isfinite(values).all():
        raise FusionDataError(f"{int((~np.isfinite(values)).sum())} ROI voxel(s) of the {volume.units} volume "
                              "are NaN or infinite")
    return mask


class _DropMirpRecords(logging.Filter):
    def __init__(self, package_dir: str) -> None:
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.package_dir)


@contextlib.contextmanager
def _quiet_mirp(package_dir: str) -> Iterator[None]:
    """MIRP calls logging.basicConfig (INFO to stdout) and logs progress on the root logger: a placeholder
    handler keeps basicConfig from configuring the application's logging, a filter drops MIRP's records,
    and its warnings (e.g. 'intensities are not calibrated' for a generic image) are silenced."""
    root = logging.getLogger()
    placeholder, drop = logging.NullHandler(), _DropMirpRecords(package_dir)
    root.addHandler(placeholder)
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(placeholder)


def texture_features(volume: Volume, mask: np.ndarray, bin_width: float | None = None,
                     n_bins: int | None = None) -> dict[str, float]:
    """IBSI texture features (GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM; all aggregations) of `mask` on `volume`.

    `bin_width` (fixed bin size, from the ROI's lowest intensity) or `n_bins` (fixed bin number): exactly one.
    Returns 408 features named as in the module docstring; a feature undefined for the ROI is NaN.
    """
    mask = _check_inputs(volume, mask)
    settings = _discretisation(bin_width, n_bins)
    if bin_width is not None:
        # FBS needs a lower bound: IBSI takes the ROI minimum when no re-segmentation range is set; the range
        # [min, open] given to MIRP keeps every ROI voxel
        settings["resegmentation_intensity_range"] = [float(volume.array[mask].min()), np.nan]

    import mirp
    from mirp._data_import.numpy_file import (  # numpy input with its own spacing
        ImageNumpyFile,
        MaskNumpyFile,
    )

    geometry = {"image_spacing": tuple(volume.spacing_mm), "image_origin": (0.0, 0.0, 0.0),
                "image_orientation": np.eye(3), "sample_name": "roi"}
    image = ImageNumpyFile(image_data=np.asarray(volume.array, dtype=np.float32), image_modality="generic",
                           **geometry)
    roi = MaskNumpyFile(image_data=mask.astype(np.int8), image_modality="generic_mask", **geometry)
    image.image_metadata, roi.image_metadata = image.image_data, roi.image_data  # no file to read them from

    with _quiet_mirp(str(Path(mirp.__file__).resolve().parent)):
        try:
            tables = mirp.extract_features(
                image=image, mask=roi, base_feature_families=["glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm"],
                glcm_distance=1.0, glcm_spatial_method=list(MATRIX_AGGREGATIONS),
                glrlm_spatial_method=list(MATRIX_AGGREGATIONS), glszm_spatial_method=list(ZONE_AGGREGATIONS),
                gldzm_spatial_method=list(ZONE_AGGREGATIONS), ngtdm_spatial_method=list(ZONE_AGGREGATIONS),
                ngldm_distance=1.0, ngldm_difference_level=0.0, ngldm_spatial_method=list(ZONE_AGGREGATIONS),
                **settings)
        except (ValueError, TypeError, IndexError) as exc:
            raise FusionDataError(f"MIRP could not compute texture features of the {int(mask.sum())}-voxel ROI "
                                  f"on the {volume.shape} {volume.units} volume: {exc}") from exc
    if not tables or tables[0] is None or len(tables[0]) != 1:
        raise FusionDataError(f"MIRP returned no feature row for the {int(mask.sum())}-voxel ROI")
    row = tables[0].iloc[0]
    return {_DISCRETISATION_SUFFIX.sub("", str(col)): float(row[col])
            for col in tables[0].columns if str(col).split("_", 1)[0] in FAMILIES}
