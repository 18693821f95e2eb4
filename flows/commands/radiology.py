"""`fusionrx radiology DIR`: one patient's CT/PET + segmentations -> ROI phenotypes (JSON), NIfTI volumes, fused PNG."""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from fusion.errors import DicomSeriesError, SegmentationError
from imaging.dicom_series import read_dicom_series_with_header
from imaging.phenotypes import (
    PET_SEARCH_MARGIN_MM,
    near_mask,
    pet_tumour_mask,
    roi_phenotypes,
    segment_lung_tumour,
)
from imaging.pet import read_pet_suv
from imaging.resample import resample_to_reference
from imaging.segmentation import RoiRef, find_roi, list_rois, roi_mask
from imaging.volume import Volume

_IMAGE_MODALITIES = ("CT", "PT")
_SEG_MODALITIES = ("RTSTRUCT", "SEG")
_INDEX_TAGS = ["Modality", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "SeriesDescription"]


@dataclass
class SeriesInfo:
    """One DICOM series found in the folder: uid, modality, frame of reference, patient and its files."""

    series_uid: str
    modality: str
    frame_of_reference_uid: str
    patient_id: str
    description: str
    files: list[Path] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        parent = os.path.commonpath([str(f.parent) for f in self.files])
        return {"series_uid": self.series_uid, "modality": self.modality, "n_files": len(self.files),
                "path": parent, "frame_of_reference_uid": self.frame_of_reference_uid,
                "description": self.description}


# TODO(lead): replace with imaging.dicom_index.index_dicom once the dicom branch lands (same grouping by
# SeriesInstanceUID from the headers, at any depth).
def group_dicom_series(directory: Path) -> tuple[list[SeriesInfo], list[Path], list[dict[str, str]]]:
    """Walk `directory` at any depth: image series (grouped by SeriesInstanceUID), segmentation files, problems."""
    series: dict[str, SeriesInfo] = {}
    segmentations: list[Path] = []
    problems: list[dict[str, str]] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.name.endswith((".nii", ".nii.gz")):
            segmentations.append(path)
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_INDEX_TAGS)
        except Exception as exc:  # not DICOM (README, licence, ...) or truncated
            problems.append({"path": str(path), "error": f"not readable as DICOM ({type(exc).__name__})"})
            continue
        modality = str(ds.get("Modality", "")).upper()
        if modality in _SEG_MODALITIES:
            segmentations.append(path)
        elif modality in _IMAGE_MODALITIES and "SeriesInstanceUID" in ds:
            uid = str(ds.SeriesInstanceUID)
            info = series.setdefault(uid, SeriesInfo(uid, modality, str(ds.get("FrameOfReferenceUID", "")),
                                                     str(ds.get("PatientID", "")),
                                                     str(ds.get("SeriesDescription", ""))))
            info.files.append(path)
        else:
            problems.append({"path": str(path), "error": f"DICOM Modality {modality or '<missing>'} not used "
                                                         f"(expected CT, PT, RTSTRUCT or SEG)"})
    return list(series.values()), segmentations, problems


def pick_ct_pet(series: list[SeriesInfo]) -> tuple[SeriesInfo | None, SeriesInfo | None]:
    """The CT and the PET to use: a pair sharing a FrameOfReferenceUID first, then the series with most files."""
    cts = sorted((s for s in series if s.modality == "CT"), key=lambda s: -len(s.files))
    pets = sorted((s for s in series if s.modality == "PT"), key=lambda s: -len(s.files))
    for pet in pets:
        for ct in cts:
            if ct.frame_of_reference_uid and ct.frame_of_reference_uid == pet.frame_of_reference_uid:
                return ct, pet
    return (cts[0] if cts else None), (pets[0] if pets else None)


def read_series(info: SeriesInfo) -> Volume:
    """Read one series into a Volume (CT in HU, PET in SUVbw) from its files wherever they lie."""
    # The current reader takes one directory holding only that series: link the files into a temp folder.
    with tempfile.TemporaryDirectory(prefix="fusionrx-series-") as tmp:
        for n, f in enumerate(info.files):
            os.symlink(f.resolve(), Path(tmp) / f"{n:06d}.dcm")
        if info.modality == "PT":
            volume, header = read_dicom_series_with_header(tmp)
            units = str(header.get("Units", "")).strip().upper()
            if units == "GML":  # already body-weight SUV (g/ml)
                volume = volume.with_array(volume.array, units="SUVbw")
            else:
                volume = read_pet_suv(tmp)
        else:
            volume, _ = read_dicom_series_with_header(tmp)
    volume.meta.update(source_dir=info.as_json()["path"], files=[str(f) for f in info.files])
    return volume


def _auto_lesion(ct: Volume | None, suv: Volume | None) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Automatic lesion: PET 40 % SUVmax component (near the CT lung tumour if one is found), else the CT tumour."""
    ct_lesion = segment_lung_tumour(ct) if ct is not None else None
    if suv is not None:
        search = None
        if ct_lesion is not None and ct_lesion.any():
            on_pet = _mask_to_grid(ct_lesion, ct, suv)
            search = near_mask(on_pet, suv.spacing_mm, PET_SEARCH_MARGIN_MM) if on_pet.any() else None
        pet_lesion = pet_tumour_mask(suv, search_mask=search)
        ct_mask = _mask_to_grid(pet_lesion, suv, ct) if ct is not None else None
        return "auto:pet_40pct_suvmax", ct_mask, pet_lesion
    return "auto:ct_lung_tumour", ct_lesion, None


def _mask_to_grid(mask: np.ndarray, source: Volume, target: Volume) -> np.ndarray:
    """Nearest-neighbour copy of a mask from one grid to another through the affines."""
    moved = resample_to_reference(source.with_array(mask.astype(np.float32), units="mask"), target, order=0)
    return moved.array > 0.5


def _finite(value: Any) -> Any:
    """JSON-safe number: NaN / inf become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def analyse(directory: Path, roi_name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find, read and measure one patient's study: (JSON report, arrays for the output files)."""
    if not directory.is_dir():
        raise DicomSeriesError(f"{directory}: not a directory of DICOM files")
    series, seg_files, problems = group_dicom_series(directory)
    ct_info, pet_info = pick_ct_pet(series)
    if ct_info is None and pet_info is None:
        raise DicomSeriesError(f"{directory}: no CT or PET (Modality CT / PT) DICOM series found")
    patients = sorted({s.patient_id for s in series if s.patient_id})
    if len(patients) > 1:
        raise DicomSeriesError(f"{directory}: DICOM tag PatientID holds several patients {patients}, expected one")
    ct = read_series(ct_info) if ct_info else None
    suv = read_series(pet_info) if pet_info else None
    refs: list[RoiRef] = []
    for path in seg_files:
        try:
            refs.extend(list_rois(path))
        except SegmentationError as exc:
            problems.append({"path": str(path), "error": str(exc)})
    if roi_name is not None:
        ref = find_roi(refs, roi_name)
        ct_mask = roi_mask(ref, ct) if ct is not None else None
        pet_mask = roi_mask(ref, suv) if suv is not None else None
        label = ref.name
        if not any(m is not None and m.any() for m in (ct_mask, pet_mask)):
            raise SegmentationError(f"{ref.path}: ROI {ref.name!r} does not intersect the CT or PET grid")
    else:
        label, ct_mask, pet_mask = _auto_lesion(ct, suv)
    phenotypes = {"roi": label, **{k: _finite(v) for k, v in roi_phenotypes(ct, ct_mask, suv, pet_mask).items()}}
    roles = {id(ct_info): "ct", id(pet_info): "pet"}
    report = {
        "patient_id": patients[0] if patients else "",
        "series": [{**s.as_json(), "role": roles.get(id(s))} for s in series],
        "rois": [r.name for r in refs],
        "segmentations": [{"name": r.name, "kind": r.kind, "path": r.path} for r in refs],
        "phenotypes": phenotypes,
        "problems": problems,
    }
    return report, {"ct": ct, "suv": suv, "ct_mask": ct_mask, "pet_mask": pet_mask, "roi": label}


def _cmd_radiology(args: argparse.Namespace) -> int:
    report, arrays = analyse(Path(args.directory), args.roi)
    if args.out:
        from flows.radiology_outputs import write_outputs

        report["outputs"] = [str(p) for p in write_outputs(Path(args.out), **arrays)]
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        print(f"patient {report['patient_id']}")
        for s in report["series"]:
            print(f"  series {s['modality']:3s} {s['n_files']:4d} files  role={s['role']}  {s['path']}")
        print(f"  ROIs: {', '.join(report['rois']) or '(none)'}")
        for key, value in report["phenotypes"].items():
            print(f"  {key:18s} {value:.3f}" if isinstance(value, float) else f"  {key:18s} {value}")
        for p in report["problems"]:
            print(f"  skipped {p['path']}: {p['error']}")
        for p in report.get("outputs", []):
            print(f"  wrote {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `radiology` to the CLI."""
    r = sub.add_parser("radiology", help="CT/PET + RTSTRUCT/SEG/NIfTI of one patient -> ROI phenotypes (IBSI)")
    r.add_argument("directory", help="one patient's DICOM files (any layout)")
    r.add_argument("--roi", default=None, help="ROI name in the segmentations (default: automatic lesion)")
    r.add_argument("--out", default=None, help="folder for NIfTI volumes and the fused PET/CT PNG")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=_cmd_radiology)
