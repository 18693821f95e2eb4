"""Reading DICOM files, and one image file -> its frames: per-frame geometry and rescale (classic or enhanced
multi-frame) and pixels.

The two read entry points every module calls (nothing else in FusionRx calls ``pydicom.dcmread``):

- ``read_header(path, tags=None, stop_after=None)``: the header without pixel data (only ``tags`` when given,
  parsing stopped past tag ``stop_after``).
- ``read_image(path, fast=True)``: an image file with its pixels: the one-pass scanner's ``FastImage`` for a
  single-frame uncompressed little-endian file (``imaging.dicom_fastread``), else the full pydicom ``Dataset``;
  None when the file is not DICOM.

Both read Part 10 files and bare datasets without the 128-byte preamble (``force`` only for those), and raise
``DicomSeriesError`` naming the file when the bytes cannot be parsed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from fusion.errors import DicomSeriesError
from imaging.dicom_fastread import FastImage, fast_read

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


def _layout(head: bytes) -> str | None:
    """'part10' ('DICM' at byte 128), 'bare' (a dataset starting with a group 0002/0008 tag) or None (not DICOM),
    from a file's first 132 bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if len(head) < 8:
        return None
    group = int.from_bytes(head[0:2], "little")
    element = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x0200:
        return None
    vr = head[4:6]
    # explicit VR: two upper-case letters; implicit VR: a 4-byte length that fits the file
    return "bare" if (vr.isalpha() and vr.isupper()) or int.from_bytes(head[4:8], "little") < 1 << 16 else None


def _file_layout(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return _layout(fh.read(132))
    except OSError:
        return None


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """True for a Part 10 file ('DICM' at byte 128) or a bare dataset starting with a group 0002/0008 tag."""
    return _file_layout(Path(path)) is not None


def _not_dicom(path: Path) -> DicomSeriesError:
    return DicomSeriesError(f"{path}: unreadable DICOM file (no 'DICM' at byte 128 and no group 0002/0008 tag "
                            f"at the start: not DICOM)")


def read_header(path: str | os.PathLike, tags: list[str] | None = None, stop_after: int | None = None) -> Dataset:
    """DICOM header without pixel data (only `tags` when given, parsing stops past tag `stop_after`).

    Raises DicomSeriesError naming the file when it is not DICOM or its header cannot be parsed.
    """
    path = Path(path)
    layout = _file_layout(path)
    if layout is None:
        raise _not_dicom(path)
    try:
        if stop_after is None:
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags, force=layout == "bare")
        with open(path, "rb") as fh:
            ds = read_partial(fh, stop_when=lambda tag, vr, length: tag > stop_after, force=layout == "bare",
                              specific_tags=[Tag(t) for t in tags] if tags else None)
    except Exception as exc:  # pydicom raises many kinds on truncated / non-DICOM bytes
        raise DicomSeriesError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    ds.filename = str(path)
    return ds


def read_image(path: str | os.PathLike, fast: bool = True) -> FastImage | Dataset | None:
    """One DICOM file with its pixel data.

    With ``fast``, a single-frame uncompressed little-endian image comes back as the one-pass scanner's
    ``FastImage`` (its volume values and stored pixels, no pydicom objects); any other file (and every file
    without ``fast``) as the full pydicom ``Dataset``. None when the file is not DICOM (README, thumbnails).
    Raises DicomSeriesError naming the file when DICOM-looking bytes cannot be parsed.
    """
    path = Path(path)
    if fast:
        try:
            data = path.read_bytes()  # one read: the scanner works on the bytes, the sniffing on their head
        except OSError as exc:
            raise DicomSeriesError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        img = fast_read(path, data)
        if img is not None:
            return img
        layout = _layout(data[:132])
    else:
        layout = _file_layout(path)
    if layout is None:
        return None
    try:
        return pydicom.dcmread(path, force=layout == "bare")
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
