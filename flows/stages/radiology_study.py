"""One patient's CT/PET study in any layout + its segmentations -> ROI phenotypes (`fusionrx radiology`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import DicomSeriesError, SegmentationError
from imaging.dicom_index import SeriesInfo, index_dicom, pair_ct_pet
from imaging.dicom_series import read_dicom_series
from imaging.phenotypes import (
    PET_SEARCH_MARGIN_MM,
    near_mask,
    pet_tumour_mask,
    roi_phenotypes,
    segment_lung_tumour,
)
from imaging.pet import read_pet_suv
from imaging.radiomics import ibsi_features
from imaging.resample import resample_to_reference
from imaging.segmentation import RoiRef, find_roi, list_rois, roi_mask
from imaging.volume import Volume

_SEG_MODALITIES = ("RTSTRUCT", "SEG")
CT_BIN_HU, PET_BIN_SUV = 25.0, 0.5


def _series_json(info: SeriesInfo, role: str | None) -> dict[str, Any]:
    """Summary of one series for the report (no file list)."""
    return {"series_uid": info.series_uid, "modality": info.modality, "n_files": info.n_files,
            "path": str(info.path), "frame_of_reference_uid": info.frame_of_reference_uid,
            "description": info.series_description, "role": role}


def pick_ct_pet(series: list[SeriesInfo]) -> tuple[SeriesInfo | None, SeriesInfo | None]:
    """The CT and PET to use: the pair sharing a frame of reference (else study) with the most PET files."""
    pairs = pair_ct_pet(series)
    if not pairs:
        return None, None
    rank = {"frame_of_reference": 2, "study": 1, "none": 0}
    best = max(pairs, key=lambda p: (p.pet is not None, rank.get(p.matched_by, 0),
                                     p.pet.n_files if p.pet else 0, p.ct.n_files if p.ct else 0))
    return best.ct, best.pet


def read_series(info: SeriesInfo) -> Volume:
    """Read one series into a Volume (CT in HU, PET in SUVbw) from its files wherever they lie."""
    return read_pet_suv(info) if info.modality == "PT" else read_dicom_series(info)


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


def _read_or_report(info: SeriesInfo | None, problems: list[dict[str, str]]) -> tuple[Volume | None, SeriesInfo | None]:
    """Read a series; a series that cannot be read is reported in `problems` and left out (the other may do)."""
    if info is None:
        return None, None
    try:
        return read_series(info), info
    except DicomSeriesError as exc:
        problems.append({"path": str(info.path), "error": str(exc)})
        return None, None


def _mask_or_report(ref: RoiRef, volume: Volume | None, problems: list[dict[str, str]]) -> np.ndarray | None:
    """The ROI on `volume`'s grid; a grid it cannot be placed on (other frame of reference) is reported."""
    if volume is None:
        return None
    try:
        return roi_mask(ref, volume)
    except SegmentationError as exc:
        problems.append({"path": ref.path, "error": str(exc)})
        return None


def _finite(value: Any) -> Any:
    """JSON-safe number: NaN / inf become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def analyse(directory: Path, roi_name: str | None,
            radiomics: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find, read and measure one patient's study: (JSON report, arrays for the output files)."""
    if not directory.is_dir():
        raise DicomSeriesError(f"{directory}: not a directory of DICOM files")
    index = index_dicom(directory)
    problems = [{"path": path, "error": error} for path, error in index.problems]
    series = [s for s in index if s.modality in ("CT", "PT")]
    seg_files = [f for s in index if s.modality in _SEG_MODALITIES for f in s.files]
    seg_files += sorted(p for p in directory.rglob("*.nii*") if p.name.endswith((".nii", ".nii.gz")))
    ct_info, pet_info = pick_ct_pet(series)
    if ct_info is None and pet_info is None:
        raise DicomSeriesError(f"{directory}: no CT or PET (Modality CT / PT) DICOM series found")
    patients = sorted({s.patient_id for s in series if s.patient_id})
    if len(patients) > 1:
        raise DicomSeriesError(f"{directory}: DICOM tag PatientID holds several patients {patients}, expected one")
    ct, ct_info = _read_or_report(ct_info, problems)
    suv, pet_info = _read_or_report(pet_info, problems)
    if ct is None and suv is None:
        raise DicomSeriesError(f"{directory}: neither the CT nor the PET series could be read: "
                               + "; ".join(p["error"] for p in problems[-2:]))
    refs: list[RoiRef] = []
    for path in seg_files:
        try:
            refs.extend(list_rois(path))
        except SegmentationError as exc:
            problems.append({"path": str(path), "error": str(exc)})
    if roi_name is not None:
        ref = find_roi(refs, roi_name)
        ct_mask, pet_mask = _mask_or_report(ref, ct, problems), _mask_or_report(ref, suv, problems)
        label = ref.name
        if not any(m is not None and m.any() for m in (ct_mask, pet_mask)):
            raise SegmentationError(f"{ref.path}: ROI {ref.name!r} does not intersect the CT or PET grid"
                                    + "".join(f"; {p['error']}" for p in problems if p["path"] == ref.path))
    else:
        label, ct_mask, pet_mask = _auto_lesion(ct, suv)
    phenotypes = {"roi": label, **{k: _finite(v) for k, v in roi_phenotypes(ct, ct_mask, suv, pet_mask).items()}}
    features = {}
    if radiomics:  # IBSI features; histogram families on fixed bin sizes (CT 25 HU, PET 0.5 SUV)
        for name, volume, mask, bin_width in (("ct", ct, ct_mask, CT_BIN_HU), ("pet", suv, pet_mask, PET_BIN_SUV)):
            if volume is not None and mask is not None and mask.any():
                features[name] = {k: _finite(v) for k, v in ibsi_features(volume, mask, bin_width).items()}
    roles = {info.series_uid: role for info, role in ((ct_info, "ct"), (pet_info, "pet")) if info is not None}
    report = {
        "patient_id": patients[0] if patients else "",
        "series": [_series_json(s, roles.get(s.series_uid)) for s in series],
        "rois": [r.name for r in refs],
        "segmentations": [{"name": r.name, "kind": r.kind, "path": r.path} for r in refs],
        "phenotypes": phenotypes,
        **({"radiomics": features} if radiomics else {}),
        "problems": problems,
    }
    return report, {"ct": ct, "suv": suv, "ct_mask": ct_mask, "pet_mask": pet_mask, "roi": label}
