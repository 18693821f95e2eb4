"""Read one CT/PET/MR DICOM series (single- or multi-frame files, any transfer syntax) into a `Volume`.

Public API (stable):

- `read_dicom_series(source, series_uid=None) -> Volume`: CT in HU, PT in its Units tag (BQML, CNTS, GML),
  MR in arbitrary units ("MR"). `source` is a folder (searched at any depth), a list of files, or a
  `SeriesInfo` from `imaging.dicom_index.index_dicom` (read exactly its files).
- `read_dicom_series_with_header(source, series_uid=None) -> (Volume, Dataset)`: plus the header of the first
  slice (no pixel data).
- `read_dicom_series_headers(source, series_uid=None) -> (Volume, list[Dataset])`: plus every file's header,
  in the order of `meta["files"]`.

Each file is read once, by `imaging.dicom_frames.read_image`: single-frame uncompressed little-endian files by a
one-pass element scanner (`imaging.dicom_fastread`, pixels straight from the buffer), everything else
(compressed syntaxes through pydicom's pixel handlers pylibjpeg / pyjpegls, enhanced multi-frame, odd files) by
pydicom. Non-DICOM files and non-image objects (RTSTRUCT, SEG, SR) in the folder are ignored; a second copy of
one SOP instance is dropped (`meta["duplicate_files"]`). Irregular slice gaps are placed on a uniform grid (see
`imaging.dicom_geometry`). `meta` holds patient_id (the PatientID tag), study_uid, series_uid,
frame_of_reference_uid, modality, manufacturer, n_slices, n_source_slices, slice_gap_min_mm / _median_mm /
_max_mm, slice_spacing_mm, slice_resampled, n_interpolated_slices and max_snap_shift_mm (when resampled),
source_dir and files (relative to source_dir, in slice order), and never a name, birth date, address or other
identifying attribute of the PS3.15 basic profile: a volume's meta is written to the store. Errors are
`DicomSeriesError`s naming the file, the tag, what was expected and what was found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError
from imaging.dicom_fastread import FastImage
from imaging.dicom_frames import FrameGeometry, frame_geometries, read_header, read_image, stored_pixels, tag_value
from imaging.dicom_geometry import apply_plan, plan_slices
from imaging.dicom_index import SeriesInfo
from imaging.volume import Volume

_UNITS_BY_MODALITY = {"CT": "HU", "MR": "MR"}
_IMAGE_MODALITIES = {"CT", "PT", "MR"}
_RESCALE_REQUIRED = {"CT", "PT"}  # Type 1 in the CT and PET image modules
# The only header values a volume carries (its meta reaches the store's .npz files): identifiers that key and
# join series (the PatientID, which the pipeline checks against the catalog's patient id, and UIDs), the scanner
# maker and the slice spacing. Nothing of the PS3.15 basic profile's identity list (PatientName, birth date,
# address, other names, physicians, institution, accession number, free-text descriptions) is ever read into it.
_ID_KEYWORDS = ("PatientID", "StudyInstanceUID", "Manufacturer", "FrameOfReferenceUID", "SliceThickness",
                "SpacingBetweenSlices")
_META_FROM_TAGS = {"patient_id": "PatientID", "study_uid": "StudyInstanceUID", "manufacturer": "Manufacturer",
                   "frame_of_reference_uid": "FrameOfReferenceUID"}

Source = str | os.PathLike | Iterable[str | os.PathLike] | SeriesInfo


def _source_files(source: Source) -> tuple[list[Path], str]:
    """Candidate files of a source and a label for messages (folders walked at any depth, hidden files skipped)."""
    if isinstance(source, SeriesInfo):
        return list(source.files), str(source.path)
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_file():
            return [root], str(root)
        if not root.is_dir():
            raise DicomSeriesError(f"{root}: not a directory of DICOM files")
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        return files, str(root)
    files = [Path(p) for p in source]
    return files, str(Path(os.path.commonpath([str(p.absolute()) for p in files]))) if files else "<no files>"


@dataclass
class _Image:
    """One parsed image file: identifiers, per-frame geometry, stored pixels and (pydicom path) its header."""

    path: Path
    series_uid: str
    sop_uid: str
    modality: str
    units: str
    frames: list[FrameGeometry]
    pixels: np.ndarray  # (frames, rows, cols) stored values
    header: Dataset | None
    ids: dict[str, str]


def _from_fast(img: FastImage) -> _Image:
    """An _Image from the fast scanner's values (ValueError when a value is malformed)."""
    modality = img.text("Modality").upper()
    if modality in _RESCALE_REQUIRED and not (img.text("RescaleSlope") and img.text("RescaleIntercept")):
        raise ValueError("rescale missing")  # pydicom path names the missing tag
    geom = FrameGeometry(
        path=img.path, frame=0, position=np.array(img.numbers("ImagePositionPatient")),
        orientation=np.array(img.numbers("ImageOrientationPatient")),
        pixel_spacing=np.array(img.numbers("PixelSpacing")),
        slope=float(img.text("RescaleSlope") or 1.0), intercept=float(img.text("RescaleIntercept") or 0.0))
    if geom.position.shape != (3,) or geom.orientation.shape != (6,) or geom.pixel_spacing.shape != (2,):
        raise ValueError("geometry tag with the wrong number of values")
    ids = {k: img.text(k) for k in _ID_KEYWORDS}
    return _Image(img.path, img.text("SeriesInstanceUID"), img.text("SOPInstanceUID"), modality,
                  img.text("Units").upper(), [geom], img.pixels, None, ids)


def _from_dataset(ds: Dataset, path: Path) -> _Image:
    """An _Image through pydicom (any syntax, multi-frame; DicomSeriesError naming the file and tag)."""
    modality = str(tag_value(ds, "Modality", path)).strip().upper()
    if modality in _RESCALE_REQUIRED and "PerFrameFunctionalGroupsSequence" not in ds:
        tag_value(ds, "RescaleSlope", path)
        tag_value(ds, "RescaleIntercept", path)
    frames = frame_geometries(ds, path)
    pixels = stored_pixels(ds, path)
    ids = {k: str(ds.get(k, "") or "") for k in _ID_KEYWORDS}
    if "PixelData" in ds:
        del ds.PixelData
    return _Image(path, str(ds.SeriesInstanceUID), str(ds.get("SOPInstanceUID", "") or ""), modality,
                  str(ds.get("Units", "") or "").strip().upper(), frames, pixels, ds, ids)


def _parse(path: Path, fast: bool) -> _Image | None:
    """Parse one file (None for non-DICOM files); the fast scanner first when allowed, pydicom otherwise."""
    if path.name.upper() == "DICOMDIR":
        return None
    img = read_image(path, fast=fast)
    if isinstance(img, FastImage):
        if img.text("Modality").upper() not in _IMAGE_MODALITIES:
            return None  # e.g. a secondary capture or NM slice in the folder: not part of the volume
        try:
            return _from_fast(img)
        except ValueError:
            img = read_image(path, fast=False)  # a malformed value: pydicom names the tag
    if img is None:
        return None  # README, notes, thumbnails: not part of any series
    ds = img
    tag_value(ds, "SeriesInstanceUID", path)
    if str(ds.get("Modality", "") or "").strip().upper() not in _IMAGE_MODALITIES and "Modality" in ds:
        return None  # RTSTRUCT, SEG, SR, presentation states beside the images: not part of the volume
    return _from_dataset(ds, path)


def _load(files: list[Path], label: str, series_uid: str | None, fast: bool) -> tuple[list[_Image], list[str]]:
    """Parse each DICOM file once and keep one series (DicomSeriesError on unreadable or mixed files)."""
    kept = [img for img in (_parse(p, fast) for p in files) if img is not None]
    if not kept:
        raise DicomSeriesError(f"{label}: no DICOM image files found (CT, PT or MR)")
    by_series: dict[str, list[_Image]] = {}
    for img in kept:
        by_series.setdefault(img.series_uid, []).append(img)
    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomSeriesError(f"{label}: no file with SeriesInstanceUID {series_uid} "
                                   f"(found {sorted(by_series)})")
        chosen = series_uid
    else:
        pool = by_series
        chosen = max(pool, key=lambda uid: len(pool[uid]))
        others = [uid for uid in pool if uid != chosen]
        if others:
            raise DicomSeriesError(
                f"{pool[others[0]][0].path}: DICOM tag SeriesInstanceUID is {others[0]}, expected {chosen} (from "
                f"{pool[chosen][0].path.name}); {label} mixes {len(pool)} image series: read one with "
                f"series_uid=... or group the files with imaging.dicom_index.index_dicom")
    seen: set[str] = set()
    images, duplicates = [], []
    for img in by_series[chosen]:
        if img.sop_uid and img.sop_uid in seen:  # the same instance copied twice (e.g. two download folders)
            duplicates.append(str(img.path))
            continue
        seen.add(img.sop_uid)
        images.append(img)
    return images, duplicates


def _units(images: list[_Image]) -> str:
    """Physical unit of the rescaled values: HU for CT, the Units tag for PT (same in every file), MR for MR."""
    ref = images[0]
    for img in images:
        if img.modality != ref.modality:
            raise DicomSeriesError(f"{img.path}: DICOM tag Modality is {img.modality}, expected {ref.modality} "
                                   f"(as in {ref.path.name})")
    if ref.modality in _UNITS_BY_MODALITY:
        return _UNITS_BY_MODALITY[ref.modality]
    if ref.modality != "PT":
        raise DicomSeriesError(f"{ref.path}: DICOM tag Modality is {ref.modality}, expected CT, PT or MR")
    for img in images:
        if not img.units:
            raise DicomSeriesError(f"{img.path}: missing DICOM tag Units")
        if img.units != ref.units:
            raise DicomSeriesError(f"{img.path}: DICOM tag Units is {img.units}, expected {ref.units} "
                                   f"(as in {ref.path.name})")
    return ref.units


def _read(source: Source, series_uid: str | None, fast: bool) -> tuple[Volume, list[_Image]]:
    """The volume of one series and its parsed files, sorted along the slice normal."""
    files, label = _source_files(source)
    images, duplicates = _load(files, label, series_uid, fast)
    units = _units(images)
    frames = [fr for img in images for fr in img.frames]
    stored = [frame for img in images for frame in img.pixels]
    shapes = [frame.shape for frame in stored]
    ref = images[0]
    thickness = ref.ids["SpacingBetweenSlices"] or ref.ids["SliceThickness"] or "1.0"
    plan = plan_slices(frames, shapes, single_slice_mm=float(thickness))
    slopes = np.array([fr.slope for fr in frames])
    intercepts = np.array([fr.intercept for fr in frames])
    array = apply_plan(plan, stored, slopes, intercepts)

    file_order = list(dict.fromkeys(frames[int(o)].path for o in plan.order))  # files by their first frame
    by_path = {img.path: img for img in images}
    images = [by_path[p] for p in file_order]
    common = Path(os.path.commonpath([str(p.absolute().parent) for p in file_order]))
    meta = {
        **{key: images[0].ids[keyword] for key, keyword in _META_FROM_TAGS.items()},
        "series_uid": images[0].series_uid,
        "modality": images[0].modality,
        "n_slices": int(array.shape[0]),
        "source_dir": str(common),
        "files": [str(p.absolute().relative_to(common)) for p in file_order],
        **plan.meta,
    }
    if duplicates:
        meta["duplicate_files"] = duplicates
    return Volume(array=array, affine=plan.affine, units=units, meta=meta), images


def read_dicom_series_headers(source: Source, series_uid: str | None = None) -> tuple[Volume, list[Dataset]]:
    """Read a series into a Volume plus every file's full header (no pixel data), in `meta["files"]` order."""
    volume, images = _read(source, series_uid, fast=False)
    return volume, [img.header for img in images]  # type: ignore[misc]


def read_dicom_series_with_header(source: Source, series_uid: str | None = None) -> tuple[Volume, Dataset]:
    """Read a series into a Volume plus the first slice's header (without pixel data)."""
    volume, images = _read(source, series_uid, fast=True)
    first = images[0]
    return volume, first.header if first.header is not None else read_header(first.path)


def read_dicom_series(source: Source, series_uid: str | None = None) -> Volume:
    """Read a DICOM series into a Volume: CT in HU, PT in the Units tag (e.g. BQML), MR in arbitrary units."""
    volume, _ = _read(source, series_uid, fast=True)
    return volume
