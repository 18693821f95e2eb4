"""Fast path for the common case: a single-frame, uncompressed little-endian image file, parsed in one scan.

pydicom builds a Python object for every element of a header (GE PET headers hold ~180, many inside
sequences), which costs more than decoding the pixels. This scanner walks the elements by their lengths,
keeps the ~25 values a volume needs and the offset of the pixel data, and builds nothing else. Anything it
does not expect (compressed or big-endian syntaxes, multi-frame, a length running past the end, a missing
required tag) makes it return None, and ``imaging.dicom_frames.read_image`` (the one image reader, the only
caller) reads that file with pydicom, which also produces the precise error message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_IMPLICIT_LE, _EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TEXT = {
    0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x00080060: "Modality", 0x00100020: "PatientID",
    0x00100010: "PatientName", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
    0x00200052: "FrameOfReferenceUID", 0x0008103E: "SeriesDescription", 0x00080070: "Manufacturer",
    0x00200032: "ImagePositionPatient", 0x00200037: "ImageOrientationPatient", 0x00280030: "PixelSpacing",
    0x00281052: "RescaleIntercept", 0x00281053: "RescaleSlope", 0x00280008: "NumberOfFrames",
    0x00541001: "Units", 0x00180050: "SliceThickness", 0x00180088: "SpacingBetweenSlices",
}
_US = {0x00280010: "Rows", 0x00280011: "Columns", 0x00280002: "SamplesPerPixel", 0x00280100: "BitsAllocated",
       0x00280101: "BitsStored", 0x00280103: "PixelRepresentation"}
_MULTIFRAME_GROUPS = {0x52009229, 0x52009230}  # Shared / PerFrame functional groups: leave to pydicom
_REQUIRED = ("SOPInstanceUID", "Modality", "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
             "PixelSpacing", "Rows", "Columns", "BitsAllocated")
_DTYPES = {(8, 0): "<u1", (8, 1): "<i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}
_U16, _U32, _TAG = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<HH")
_LAST_WANTED = 0x00281053  # RescaleSlope: every wanted tag but Units comes before it
_UNITS_TAG = 0x00541001


class _Unsupported(Exception):
    """The file needs pydicom (unexpected structure or syntax)."""


@dataclass
class FastImage:
    """The values of one single-frame image file that a volume needs, and its stored pixels."""

    path: Path
    values: dict[str, str | int]
    pixels: np.ndarray  # (1, rows, cols) stored values

    def text(self, keyword: str, default: str = "") -> str:
        """A string value ('' or `default` when absent)."""
        return str(self.values.get(keyword, default))

    def numbers(self, keyword: str) -> list[float]:
        """A DS/IS value as floats (backslash-separated multi-values)."""
        return [float(v) for v in str(self.values[keyword]).split("\\")]


def _tag_at(data: bytes, pos: int) -> int:
    group, element = _TAG.unpack_from(data, pos)
    return (group << 16) | element


def _element(data: bytes, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, header size) of the element at pos."""
    tag = _tag_at(data, pos)
    if tag >> 16 == 0xFFFE:  # item and delimiters: always tag + 4-byte length
        return tag, None, _U32.unpack_from(data, pos + 4)[0], 8
    if not explicit:
        return tag, None, _U32.unpack_from(data, pos + 4)[0], 8
    vr = data[pos + 4:pos + 6]
    if not (vr.isalpha() and vr.isupper()):
        raise _Unsupported(f"VR {vr!r} of tag {tag:08x} is not two upper-case letters")
    if vr in _LONG_VRS:
        return tag, vr, _U32.unpack_from(data, pos + 8)[0], 12
    return tag, vr, _U16.unpack_from(data, pos + 6)[0], 8


def _skip_undefined(data: bytes, pos: int, explicit: bool) -> int:
    """Position after an undefined-length sequence whose items start at pos."""
    while True:
        if pos + 8 > len(data):
            raise _Unsupported("sequence runs past the end")
        tag, length = _tag_at(data, pos), _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unsupported(f"unexpected tag {tag:08x} in a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: its elements up to the item delimiter
            tag, vr, length, header = _element(data, pos, explicit)
            pos += header
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                pos = _skip_undefined(data, pos, explicit and vr != b"UN")  # UN of undefined length: implicit VR
            else:
                pos += length


def _scan(data: bytes, path: Path) -> FastImage:
    """Walk the top-level elements; keep the wanted values and the pixel buffer."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Unsupported("no Part 10 preamble")
    pos, syntax = 132, None
    while pos + 8 <= len(data) and _TAG.unpack_from(data, pos)[0] == 0x0002:  # file meta: explicit VR LE
        tag, _, length, header = _element(data, pos, True)
        if tag == 0x00020010:
            syntax = data[pos + header:pos + header + length].decode("ascii", "replace").strip("\x00 ")
        pos += header + length
    if syntax not in (_IMPLICIT_LE, _EXPLICIT_LE):
        raise _Unsupported(f"transfer syntax {syntax}")
    explicit = syntax == _EXPLICIT_LE
    values: dict[str, str | int] = {}
    pixels = None
    last_wanted = _LAST_WANTED
    while pos + 8 <= len(data):
        tag, vr, length, header = _element(data, pos, explicit)
        if tag > last_wanted and tag != _PIXEL_DATA:
            if last_wanted < _UNITS_TAG and values.get("Modality") == "PT":
                last_wanted = _UNITS_TAG  # a PET also needs Units (0054,1001)
            else:
                pixels = _trailing_pixels(data, values, explicit)
                if pixels is not None:  # the pixel data closes the file, as nearly always: skip the rest
                    break
                last_wanted = _PIXEL_DATA
        pos += header
        if tag in _MULTIFRAME_GROUPS:
            raise _Unsupported("enhanced multi-frame")
        if tag == _PIXEL_DATA:
            if length == _UNDEFINED or pos + length > len(data):
                raise _Unsupported("encapsulated or truncated pixel data")
            pixels = (pos, length)
            break
        if length == _UNDEFINED:
            pos = _skip_undefined(data, pos, explicit and vr != b"UN")
            continue
        if pos + length > len(data):
            raise _Unsupported("element runs past the end")
        if tag in _TEXT:
            values[_TEXT[tag]] = data[pos:pos + length].decode("latin-1").strip("\x00 ")
        elif tag in _US and length == 2:
            values[_US[tag]] = _U16.unpack_from(data, pos)[0]
        pos += length
    if pixels is None or any(k not in values or values[k] == "" for k in _REQUIRED):
        raise _Unsupported("pixel data or a required tag missing")
    if int(str(values.get("NumberOfFrames", "1") or "1")) != 1 or int(values.get("SamplesPerPixel", 1)) != 1:
        raise _Unsupported("multi-frame or colour")
    rows, cols, bits = int(values["Rows"]), int(values["Columns"]), int(values["BitsAllocated"])
    key = (bits, int(values.get("PixelRepresentation", 0)))
    if key not in _DTYPES:
        raise _Unsupported(f"BitsAllocated/PixelRepresentation {key}")
    dtype = np.dtype(_DTYPES[key])
    if pixels[1] < rows * cols * dtype.itemsize:
        raise _Unsupported("short pixel data")
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols, offset=pixels[0]).reshape(1, rows, cols)
    stored = int(values.get("BitsStored", bits) or bits)
    if stored < bits:  # ignore unused high bits; sign-extend from BitsStored
        arr = np.right_shift(np.left_shift(arr, bits - stored), bits - stored)
    return FastImage(path=path, values=values, pixels=arr.astype(dtype.newbyteorder("="), copy=False))


def _trailing_pixels(data: bytes, values: dict[str, str | int], explicit: bool) -> tuple[int, int] | None:
    """(offset, length) of a PixelData element that ends the file with the size Rows/Columns/Bits imply."""
    try:
        size = int(values["Rows"]) * int(values["Columns"]) * int(values["BitsAllocated"]) // 8
    except (KeyError, ValueError):
        return None
    for length in (size, size + 1):  # odd sizes are padded to even
        offset = len(data) - length
        header = 12 if explicit else 8
        if offset - header < 0 or _tag_at(data, offset - header) != _PIXEL_DATA:
            continue
        if explicit and data[offset - 8:offset - 6] not in (b"OW", b"OB"):
            continue
        if _U32.unpack_from(data, offset - 4)[0] == length:
            return offset, length
    return None


def fast_read(path: Path, data: bytes) -> FastImage | None:
    """The file's volume values and pixels, or None when it needs the full pydicom reader."""
    try:
        return _scan(data, path)
    except (_Unsupported, struct.error, ValueError, UnicodeDecodeError):
        return None
