"""Resample a volume onto another volume's voxel grid through their affines (e.g. PET onto CT)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fusion.errors import DicomSeriesError
from imaging.volume import Volume


def resample_to_reference(
    moving: Volume,
    reference: Volume,
    order: int = 1,
    fill: float = 0.0,
    *,
    check_frame_of_reference: bool = True,
) -> Volume:
    """Sample `moving` at each voxel centre of `reference` (spline `order`, `fill` outside), keeping moving's units.

    Both affines map to the same patient (LPS, mm) space only when the series share a
    FrameOfReferenceUID; a mismatch raises DicomSeriesError unless the check is turned off.
    """
    if check_frame_of_reference:
        mov_for = moving.meta.get("frame_of_reference_uid")
        ref_for = reference.meta.get("frame_of_reference_uid")
        if mov_for and ref_for and mov_for != ref_for:
            raise DicomSeriesError(
                f"series {moving.meta.get('series_uid')}: FrameOfReferenceUID {mov_for} differs from reference "
                f"series {reference.meta.get('series_uid')} ({ref_for}); the affines do not share a patient space"
            )
    # reference voxel -> world -> moving voxel
    ref_to_mov = np.linalg.inv(moving.affine) @ reference.affine
    if np.allclose(ref_to_mov, np.eye(4), atol=1e-9) and moving.shape == reference.shape:
        array = moving.array.copy()
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
    return Volume(array=array.astype(np.float32), affine=reference.affine.copy(), units=moving.units, meta=meta)
