"""One DICOM image file -> its frames: per-frame geometry and rescale (classic or enhanced multi-frame) and pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from fusion.errors import DicomSeriesError

_NATIVE_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "u2", (16, 1): "i2", (32, 0): "u4", (32, 1): "i4"}


@dataclass
class FrameGeometry:
    """Where one 2D frame sits (LPS mm) and how its stored values rescale to physical values."""

    path: Path
    frame: int  # index of the frame inside its file (0 for single-frame files)
    position: np.ndarray  # ImagePositionPatient, (3,) mm
    orientation: np.ndarray  # ImageOrientationPatient, (6,) direction cosines (row, column)
    pixel_spacing: np.ndarray  # PixelSpacing (row spacing, column spacing), (2,) mm
    slope: float
    intercept: float


def tag_value(ds: Dataset, keyword: str, path: Path) -> Any:
    """Value of `keyword` in `ds`, or DicomSeriesError naming the file and the tag."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes, list, tuple, MultiValue)) and len(value) == 0):
        raise DicomSeriesError(f"{path}: missing DICOM tag {keyword}")
    return value


def floats(value: Any, keyword: str, path: Path, n: int) -> np.ndarray:
    """A tag value as a float64 vector of length n (DicomSeriesError when malformed)."""
    try:
        values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"{path}: DICOM tag {keyword} is not numeric: {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"{path}: DICOM tag {keyword} expected {n} finite numbers, got {value!r}")
    return arr


def read_image_file(path: Path) -> Dataset:
    """Full DICOM dataset of one image file (DicomSeriesError naming the file when unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            force = fh.read(4) != b"DICM"
        return pydicom.dcmread(path, force=force)
    except Exception as exc:  # pydicom raises many kinds on truncated / non-DICOM bytes
        raise DicomSeriesError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc


def n_frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _functional(ds: Dataset, frame: int, group: str, keyword: str) -> Any:
    """An attribute from an enhanced-image functional group: per-frame item first, then the shared item."""
    for seq_kw, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_kw)
        if seq and len(seq) > index:
            inner = seq[index].get(group)
            if inner:
                value = inner[0].get(keyword)
                if value is not None and value != "":
                    return value
    return None


def frame_geometries(ds: Dataset, path: Path) -> list[FrameGeometry]:
    """Geometry and rescale of every frame in a file: classic single-frame, enhanced, or GridFrameOffsetVector."""
    count = n_frames(ds)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    out = []
    for f in range(count):
        if enhanced:
            ipp = _functional(ds, f, "PlanePositionSequence", "ImagePositionPatient")
            iop = _functional(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _functional(ds, f, "PixelMeasuresSequence", "PixelSpacing")
            slope = _functional(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _functional(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
            where = f" (frame {f + 1} of {count}, functional groups)"
        else:
            ipp, iop, spacing = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
            slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
            where = ""
        iop = iop if iop is not None else ds.get("ImageOrientationPatient")
        spacing = spacing if spacing is not None else ds.get("PixelSpacing")
        slope = slope if slope is not None else ds.get("RescaleSlope", 1.0)
        intercept = intercept if intercept is not None else ds.get("RescaleIntercept", 0.0)
        for keyword, value in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                               ("PixelSpacing", spacing)):
            if value is None or (isinstance(value, (str, list, MultiValue)) and len(value) == 0):
                raise DicomSeriesError(f"{path}: missing DICOM tag {keyword}{where}")
        orientation = floats(iop, "ImageOrientationPatient", path, 6)
        position = floats(ipp, "ImagePositionPatient", path, 3)
        if not enhanced and count > 1:  # classic multi-frame (e.g. NM, RT dose): offsets along the normal
            offsets = ds.get("GridFrameOffsetVector")
            if offsets is None or len(offsets) != count:
                raise DicomSeriesError(f"{path}: missing DICOM tag GridFrameOffsetVector for {count} frames "
                                       f"(no per-frame positions)")
            normal = np.cross(orientation[:3], orientation[3:])
            position = position + float(offsets[f]) * normal
        out.append(FrameGeometry(
            path=path, frame=f, position=position, orientation=orientation,
            pixel_spacing=floats(spacing, "PixelSpacing", path, 2),
            slope=float(floats(slope, "RescaleSlope", path, 1)[0]),
            intercept=float(floats(intercept, "RescaleIntercept", path, 1)[0]),
        ))
    return out


def stored_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values as (frames, rows, cols): native syntaxes straight from the buffer, others via pydicom."""
    if "PixelData" not in ds:  # a truncated file usually loses its pixels and later tags
        raise DicomSeriesError(f"{path}: missing DICOM tag PixelData (file truncated or incomplete? "
                               f"{path.stat().st_size} bytes)")
    rows, cols, count = int(tag_value(ds, "Rows", path)), int(tag_value(ds, "Columns", path)), n_frames(ds)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomSeriesError(f"{path}: DICOM tag SamplesPerPixel is {ds.SamplesPerPixel}, expected 1 (grey levels)")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits_alloc = int(tag_value(ds, "BitsAllocated", path))
    bits_stored = int(ds.get("BitsStored", bits_alloc) or bits_alloc)
    key = (bits_alloc, int(ds.get("PixelRepresentation", 0) or 0))
    native = ts is None or not ts.is_compressed and not ts.is_deflated
    if native and key in _NATIVE_DTYPES:
        endian = ">" if ts is not None and not ts.is_little_endian else "<"
        dtype = np.dtype(endian + _NATIVE_DTYPES[key])
        buffer = ds.PixelData
        need = rows * cols * count * dtype.itemsize
        if len(buffer) < need:
            raise DicomSeriesError(f"{path}: DICOM tag PixelData holds {len(buffer)} bytes, expected {need} for "
                                   f"{count} frame(s) of {rows}x{cols} x {bits_alloc} bits (file truncated?)")
        arr = np.frombuffer(buffer, dtype=dtype, count=rows * cols * count).reshape(count, rows, cols)
        if bits_stored < bits_alloc:  # ignore unused high bits; sign-extend from BitsStored
            shift = bits_alloc - bits_stored
            arr = np.right_shift(np.left_shift(arr, shift), shift)
        return arr.astype(dtype.newbyteorder("="), copy=False)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoder missing or corrupt codestream
        name = getattr(ts, "name", ts)
        raise DicomSeriesError(f"{path}: DICOM tag PixelData cannot be decoded (transfer syntax {name}; "
                               f"{type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (count, rows, cols):
        raise DicomSeriesError(f"{path}: DICOM tag PixelData decodes to shape {arr.shape}, expected "
                               f"({count}, {rows}, {cols}) (one grey-level frame per NumberOfFrames)")
    return arr
