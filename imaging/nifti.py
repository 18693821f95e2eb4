"""NIfTI <-> Volume: nibabel's RAS affine over (i, j, k) to FusionRx's LPS affine over [k, j, i], and back."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from fusion.errors import SegmentationError
from imaging.volume import Volume

_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # flips x and y; its own inverse
_IJK_KJI = [2, 1, 0, 3]  # affine column order between NIfTI (i, j, k) and Volume [k, j, i]


def read_nifti(path: str | os.PathLike, units: str = "1") -> Volume:
    """Read a 3D NIfTI image into a Volume (array [k, j, i], LPS affine in mm); `units` names its values."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many kinds on non-NIfTI or truncated bytes
        raise SegmentationError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SegmentationError(f"{path}: NIfTI dim expected a 3D image, found shape {data.shape}")
    space_unit = image.header.get_xyzt_units()[0]
    scale = {"meter": 1000.0, "micron": 0.001}.get(space_unit, 1.0)  # "mm" and "unknown" taken as mm
    lps = _LPS_RAS @ image.affine.astype(np.float64)
    lps[:3, :3] *= scale
    lps[:3, 3] *= scale
    affine = lps[:, _IJK_KJI]
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), affine, units, {"source_file": str(path)})


def to_nifti(volume: Volume, dtype: type = np.float32) -> nib.Nifti1Image:
    """Volume -> in-memory NIfTI-1 image (RAS affine, mm, voxel values cast to `dtype`)."""
    ras = _LPS_RAS @ volume.affine[:, _IJK_KJI]
    image = nib.Nifti1Image(np.asarray(volume.array.transpose(2, 1, 0), dtype=dtype), ras)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(ras, code=1)  # scanner-anatomical
    image.set_sform(ras, code=1)
    image.header["descrip"] = f"FusionRx {volume.units}"[:79].encode()
    return image


def write_nifti(volume: Volume, path: str | os.PathLike, dtype: type = np.float32) -> Path:
    """Write a Volume as .nii/.nii.gz (temp file beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(to_nifti(volume, dtype), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
