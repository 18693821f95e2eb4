"""Resample a volume onto another volume's voxel grid through their affines (e.g. PET onto CT)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from imaging.volume import Volume, axis_map, resample_linear, resample_nearest
from imaging.volume import check_frame_of_reference as _check_frame


def resample_to_reference(
    moving: Volume,
    reference: Volume,
    order: int = 1,
    fill: float = 0.0,
    *,
    check_frame_of_reference: bool = True,
) -> Volume:
    """Sample `moving` at each voxel centre of `reference` (spline `order`, `fill` outside), keeping moving's units.

    Axis-aligned grids with order 0 or 1 take imaging.volume's separable resampler (equal to scipy's within
    float32 rounding; seconds instead of tens of seconds for a PET onto a 512x512x300 CT).

    Both affines map to the same patient (LPS, mm) space only when the series share a
    FrameOfReferenceUID; a mismatch raises DicomSeriesError unless the check is turned off.
    """
    if check_frame_of_reference:
        _check_frame(moving, reference)
    # reference voxel -> world -> moving voxel
    ref_to_mov = np.linalg.inv(moving.affine) @ reference.affine
    amap = axis_map(moving, reference) if order in (0, 1) else None
    if np.allclose(ref_to_mov, np.eye(4), atol=1e-9) and moving.shape == reference.shape:
        array = moving.array.copy()
    elif amap is not None:  # axis-aligned grids (CT/PET, SEG on CT): separable, float32, a few planes of memory
        resample = resample_linear if order == 1 else resample_nearest
        array = resample(moving.array, amap, reference.shape, fill)
    else:
        array = ndimage.affine_transform(
            moving.array,
            ref_to_mov[:3, :3],
            offset=ref_to_mov[:3, 3],
            output_shape=reference.shape,
            order=order,
            mode="constant",
            cval=fill,
            prefilter=order > 1,
        )
    meta = {**moving.meta, "resampled_to_series_uid": reference.meta.get("series_uid")}
    return Volume(array=array.astype(np.float32, copy=False), affine=reference.affine.copy(), units=moving.units,
                  meta=meta)
