"""Read one CT/PET DICOM series (one file per slice) into a `Volume` with rescaled values and an LPS affine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from fusion.errors import DicomSeriesError
from imaging.volume import Volume

# Tags every slice must carry for the geometry and the rescale.
_REQUIRED_TAGS = (
    "Modality",
    "SeriesInstanceUID",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "RescaleSlope",
    "RescaleIntercept",
)
_ORIENTATION_ATOL = 1e-4
_SPACING_RTOL = 1e-4
# Slice gaps may differ by this fraction of the median gap (floating point in IPP strings).
_SLICE_GAP_RTOL = 0.01
_UNITS_BY_MODALITY = {"CT": "HU"}


def _tag(ds: Dataset, keyword: str, path: Path) -> Any:
    """Value of `keyword` in `ds`, or DicomSeriesError naming the file and the tag."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes, list, tuple, MultiValue)) and len(value) == 0):
        raise DicomSeriesError(f"{path}: missing DICOM tag {keyword}")
    return value


def _floats(ds: Dataset, keyword: str, path: Path, n: int) -> np.ndarray:
    """Tag value as a float64 vector of length n (DicomSeriesError when absent or malformed)."""
    value = _tag(ds, keyword, path)
    try:
        values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"{path}: DICOM tag {keyword} is not numeric: {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"{path}: DICOM tag {keyword} expected {n} finite numbers, got {value!r}")
    return arr


def _series_files(directory: Path) -> list[Path]:
    """Regular, non-hidden files of a series directory (DICOMDIR excluded), sorted by name."""
    if not directory.is_dir():
        raise DicomSeriesError(f"{directory}: not a directory of DICOM files")
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )
    if not files:
        raise DicomSeriesError(f"{directory}: no DICOM files found")
    return files


def _read_file(path: Path) -> tuple[Dataset, np.ndarray]:
    """Read one slice: header and stored pixel values (DicomSeriesError on anything unreadable)."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many kinds on truncated / non-DICOM bytes
        raise DicomSeriesError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:  # checked first: a truncated file usually loses its pixels and later tags
        raise DicomSeriesError(f"{path}: missing DICOM tag PixelData (file truncated or incomplete? "
                               f"{path.stat().st_size} bytes)")
    for keyword in _REQUIRED_TAGS:
        _tag(ds, keyword, path)
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DicomSeriesError(f"{path}: DICOM tag PixelData cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise DicomSeriesError(
            f"{path}: DICOM tag PixelData expected one 2D frame per file, got array shape {pixels.shape}"
        )
    return ds, pixels


def read_dicom_series_with_header(directory: str | Path) -> tuple[Volume, Dataset]:
    """Read a series into a Volume (rescaled values; HU for CT, the Units tag for PT) plus the first slice's header."""
    directory = Path(directory)
    files = _series_files(directory)
    headers: list[Dataset] = []
    frames: list[np.ndarray] = []
    for path in files:
        ds, pixels = _read_file(path)
        headers.append(ds)
        frames.append(pixels)

    ref, ref_path = headers[0], files[0]
    series_uid = str(ref.SeriesInstanceUID)
    modality = str(ref.Modality).upper()
    iop = _floats(ref, "ImageOrientationPatient", ref_path, 6)
    pixel_spacing = _floats(ref, "PixelSpacing", ref_path, 2)
    rows, cols = int(ref.Rows), int(ref.Columns)
    for ds, path, pixels in zip(headers, files, frames):
        if str(ds.SeriesInstanceUID) != series_uid:
            raise DicomSeriesError(
                f"{path}: DICOM tag SeriesInstanceUID is {ds.SeriesInstanceUID}, expected {series_uid} "
                f"(from {ref_path.name}); the directory mixes series"
            )
        if str(ds.Modality).upper() != modality:
            raise DicomSeriesError(f"{path}: DICOM tag Modality is {ds.Modality}, expected {modality}")
        if not np.allclose(_floats(ds, "ImageOrientationPatient", path, 6), iop, atol=_ORIENTATION_ATOL):
            raise DicomSeriesError(
                f"{path}: DICOM tag ImageOrientationPatient {list(ds.ImageOrientationPatient)} differs from "
                f"{ref_path.name} {list(iop)}"
            )
        if not np.allclose(_floats(ds, "PixelSpacing", path, 2), pixel_spacing, rtol=_SPACING_RTOL):
            raise DicomSeriesError(
                f"{path}: DICOM tag PixelSpacing {list(ds.PixelSpacing)} differs from {ref_path.name} "
                f"{list(pixel_spacing)}"
            )
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols) or pixels.shape != (rows, cols):
            raise DicomSeriesError(
                f"{path}: DICOM tags Rows/Columns {int(ds.Rows)}x{int(ds.Columns)} (pixels {pixels.shape}) "
                f"differ from {ref_path.name} {rows}x{cols}"
            )

    row_cos, col_cos = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row_cos), 1, atol=1e-3) and np.isclose(np.linalg.norm(col_cos), 1, atol=1e-3)
            and abs(np.dot(row_cos, col_cos)) < 1e-3):
        raise DicomSeriesError(
            f"{ref_path}: DICOM tag ImageOrientationPatient {list(iop)} is not two orthonormal direction cosines"
        )
    normal = np.cross(row_cos, col_cos)
    positions = np.stack([_floats(ds, "ImagePositionPatient", p, 3) for ds, p in zip(headers, files)])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    files = [files[o] for o in order]
    headers = [headers[o] for o in order]

    n = len(files)
    if n > 1:
        gaps = np.diff(along)
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            a, b = files[dup[0]], files[dup[0] + 1]
            raise DicomSeriesError(
                f"{b}: DICOM tag ImagePositionPatient duplicates the slice position of {a.name} "
                f"({along[dup[0]]:.3f} mm along the slice normal)"
            )
        median_gap = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - median_gap) > _SLICE_GAP_RTOL * median_gap)
        if bad.size:
            raise DicomSeriesError(
                f"{files[bad[0] + 1]}: DICOM tag ImagePositionPatient gives a slice gap of {gaps[bad[0]]:.3f} mm, "
                f"expected uniform {median_gap:.3f} mm (missing or extra slice?)"
            )
        slice_step = (positions[-1] - positions[0]) / (n - 1)
    else:
        thickness = ref.get("SpacingBetweenSlices") or ref.get("SliceThickness") or 1.0
        slice_step = normal * float(thickness)

    affine = np.eye(4)
    affine[:3, 0] = slice_step
    affine[:3, 1] = col_cos * pixel_spacing[0]  # rows advance along the column direction, spacing PixelSpacing[0]
    affine[:3, 2] = row_cos * pixel_spacing[1]  # columns advance along the row direction, spacing PixelSpacing[1]
    affine[:3, 3] = positions[0]

    stored = np.stack([frames[o] for o in order]).astype(np.float32)
    slopes = np.array([float(ds.RescaleSlope) for ds in headers], dtype=np.float32)
    intercepts = np.array([float(ds.RescaleIntercept) for ds in headers], dtype=np.float32)
    array = stored * slopes[:, None, None] + intercepts[:, None, None]

    if modality in _UNITS_BY_MODALITY:
        units = _UNITS_BY_MODALITY[modality]
    elif modality == "PT":
        units = str(_tag(ref, "Units", files[0])).strip().upper()
        for ds, path in zip(headers, files):
            if str(_tag(ds, "Units", path)).strip().upper() != units:
                raise DicomSeriesError(f"{path}: DICOM tag Units is {ds.Units}, expected {units}")
    else:
        raise DicomSeriesError(f"{files[0]}: DICOM tag Modality is {modality}, expected CT or PT")

    meta = {
        "patient_id": str(ref.get("PatientID", "")),
        "patient_name": str(ref.get("PatientName", "")),
        "study_uid": str(ref.get("StudyInstanceUID", "")),
        "series_uid": series_uid,
        "series_description": str(ref.get("SeriesDescription", "")),
        "modality": modality,
        "frame_of_reference_uid": str(ref.get("FrameOfReferenceUID", "")),
        "n_slices": n,
        "source_dir": str(directory),
        "files": [p.name for p in files],
    }
    header = headers[0].copy()
    if "PixelData" in header:
        del header.PixelData
    return Volume(array=array, affine=affine, units=units, meta=meta), header


def read_dicom_series(directory: str | Path) -> Volume:
    """Read a single-series DICOM directory into a Volume: CT in HU, PT in the Units tag (e.g. BQML)."""
    volume, _ = read_dicom_series_with_header(directory)
    return volume
