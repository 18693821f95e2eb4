"""Read one CT/PET/MR DICOM series (single- or multi-frame files, any transfer syntax) into a `Volume`.

Public API (stable):

- `read_dicom_series(source, series_uid=None) -> Volume`: CT in HU, PT in its Units tag (BQML, CNTS, GML),
  MR in arbitrary units ("MR"). `source` is a folder (searched at any depth), a list of files, or a
  `SeriesInfo` from `imaging.dicom_index.index_dicom` (read exactly its files).
- `read_dicom_series_with_header(source, series_uid=None) -> (Volume, Dataset)`: plus the header of the first
  slice (no pixel data).
- `read_dicom_series_headers(source, series_uid=None) -> (Volume, list[Dataset])`: plus every file's header,
  in the order of `meta["files"]`.

Each file is parsed once; native pixel data is taken straight from the buffer, compressed transfer syntaxes
go through pydicom's pixel handlers (pylibjpeg, pyjpegls). Irregular slice gaps are resampled to a uniform
grid (see `imaging.dicom_geometry`); `meta` reports the spread (`slice_gap_min_mm`, `slice_gap_max_mm`, ...).
Errors are `DicomSeriesError`s naming the file, the tag, what was expected and what was found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fusion.errors import DicomSeriesError
from imaging.dicom_frames import frame_geometries, read_image_file, stored_pixels, tag_value
from imaging.dicom_geometry import apply_plan, plan_slices
from imaging.dicom_index import SeriesInfo, looks_like_dicom
from imaging.volume import Volume

_UNITS_BY_MODALITY = {"CT": "HU", "MR": "MR"}
_RESCALE_REQUIRED = {"CT", "PT"}  # Type 1 in the CT and PET image modules

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


def _load(files: list[Path], label: str, series_uid: str | None) -> tuple[list[Path], list[Dataset], list[str]]:
    """Parse each DICOM file once and keep one series (DicomSeriesError on unreadable or mixed files)."""
    kept: list[tuple[Path, Dataset]] = []
    for path in files:
        if path.name.upper() == "DICOMDIR" or not looks_like_dicom(path):
            continue  # README, notes, thumbnails: not part of any series
        ds = read_image_file(path)
        tag_value(ds, "SeriesInstanceUID", path)
        kept.append((path, ds))
    if not kept:
        raise DicomSeriesError(f"{label}: no DICOM files found")
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in kept:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomSeriesError(f"{label}: no file with SeriesInstanceUID {series_uid} "
                                   f"(found {sorted(by_series)})")
        chosen = series_uid
    else:
        images = {uid: items for uid, items in by_series.items() if "PixelData" in items[0][1]
                  or str(items[0][1].get("Modality", "")).upper() in ("CT", "PT", "MR")}
        pool = images or by_series
        chosen = max(pool, key=lambda uid: len(pool[uid]))
        others = [uid for uid in pool if uid != chosen]
        if others:
            odd_path = pool[others[0]][0][0]
            raise DicomSeriesError(
                f"{odd_path}: DICOM tag SeriesInstanceUID is {others[0]}, expected {chosen} (from "
                f"{pool[chosen][0][0].name}); {label} mixes {len(pool)} image series: read one with "
                f"series_uid=... or group the files with imaging.dicom_index.index_dicom")
    seen: dict[str, Path] = {}
    paths, headers, duplicates = [], [], []
    for path, ds in by_series[chosen]:
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:  # the same instance copied twice (e.g. two download folders)
            duplicates.append(str(path))
            continue
        seen[sop] = path
        paths.append(path)
        headers.append(ds)
    return paths, headers, duplicates


def _units(modality: str, headers: list[Dataset], paths: list[Path]) -> str:
    """Physical unit of the rescaled values: HU for CT, the Units tag for PT (same in every file), MR for MR."""
    if modality in _UNITS_BY_MODALITY:
        return _UNITS_BY_MODALITY[modality]
    if modality != "PT":
        raise DicomSeriesError(f"{paths[0]}: DICOM tag Modality is {modality}, expected CT, PT or MR")
    units = str(tag_value(headers[0], "Units", paths[0])).strip().upper()
    for ds, path in zip(headers, paths):
        if str(tag_value(ds, "Units", path)).strip().upper() != units:
            raise DicomSeriesError(f"{path}: DICOM tag Units is {ds.Units}, expected {units} (as in {paths[0].name})")
    return units


def read_dicom_series_headers(source: Source, series_uid: str | None = None) -> tuple[Volume, list[Dataset]]:
    """Read a series into a Volume (rescaled values; HU for CT, the Units tag for PT) plus every file's header."""
    files, label = _source_files(source)
    paths, headers, duplicates = _load(files, label, series_uid)
    ref = headers[0]
    modality = str(tag_value(ref, "Modality", paths[0])).strip().upper()
    frames, shapes, stored = [], [], []
    for ds, path in zip(headers, paths):
        if str(tag_value(ds, "Modality", path)).strip().upper() != modality:
            raise DicomSeriesError(f"{path}: DICOM tag Modality is {ds.Modality}, expected {modality} "
                                   f"(as in {paths[0].name})")
        if modality in _RESCALE_REQUIRED and "PerFrameFunctionalGroupsSequence" not in ds:
            tag_value(ds, "RescaleSlope", path)
            tag_value(ds, "RescaleIntercept", path)
        geoms = frame_geometries(ds, path)
        pixels = stored_pixels(ds, path)
        frames.extend(geoms)
        shapes.extend([pixels.shape[1:]] * len(geoms))
        stored.extend(pixels)
    units = _units(modality, headers, paths)
    thickness = ref.get("SpacingBetweenSlices") or ref.get("SliceThickness") or 1.0
    plan = plan_slices(frames, shapes, single_slice_mm=float(thickness))
    slopes = np.array([fr.slope for fr in frames])
    intercepts = np.array([fr.intercept for fr in frames])
    array = apply_plan(plan, stored, slopes, intercepts)

    order = [int(o) for o in plan.order]
    file_order = list(dict.fromkeys(frames[o].path for o in order))  # files sorted by their first frame
    index_of = {p: i for i, p in enumerate(paths)}
    headers = [headers[index_of[p]] for p in file_order]
    common = Path(os.path.commonpath([str(p.absolute().parent) for p in file_order]))
    meta = {
        "patient_id": str(ref.get("PatientID", "")),
        "patient_name": str(ref.get("PatientName", "")),
        "study_uid": str(ref.get("StudyInstanceUID", "")),
        "series_uid": str(ref.SeriesInstanceUID),
        "series_description": str(ref.get("SeriesDescription", "")),
        "modality": modality,
        "manufacturer": str(ref.get("Manufacturer", "")),
        "frame_of_reference_uid": str(ref.get("FrameOfReferenceUID", "")),
        "n_slices": int(array.shape[0]),
        "source_dir": str(common),
        "files": [str(p.absolute().relative_to(common)) for p in file_order],
        "transfer_syntax_uid": str(getattr(ref, "file_meta", {}).get("TransferSyntaxUID", "")),
        **plan.meta,
    }
    if duplicates:
        meta["duplicate_files"] = duplicates
    for ds in headers:
        if "PixelData" in ds:
            del ds.PixelData
    return Volume(array=array, affine=plan.affine, units=units, meta=meta), headers


def read_dicom_series_with_header(source: Source, series_uid: str | None = None) -> tuple[Volume, Dataset]:
    """Read a series into a Volume plus the first slice's header (without pixel data)."""
    volume, headers = read_dicom_series_headers(source, series_uid)
    return volume, headers[0]


def read_dicom_series(source: Source, series_uid: str | None = None) -> Volume:
    """Read a DICOM series into a Volume: CT in HU, PT in the Units tag (e.g. BQML), MR in arbitrary units."""
    volume, _ = read_dicom_series_headers(source, series_uid)
    return volume
