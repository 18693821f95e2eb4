"""The radiology section of a patient report: the fusion phenotypes, the ROI the run measured (source, label,
volume, bounding box on the CT grid, the stored mask) and the series read.

The ROI comes from what the radiology stage stored beside the patient's result
(``STORE/imaging/radiology/<patient>/<patient>_roi.npz``, flows.stages.radiology_study.write_roi_npz): nothing is
measured again. A store written before the stage kept the mask has none; the ROI is then measured again as the
run measured it (its ROI patterns over the patient's segmentations, else the automatic lesion) and
``roi.from`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import DicomSeriesError, SegmentationError

STORED, REMEASURED = "stored", "re-measured (the store predates stored ROI masks)"


def _series(path: Path | None) -> dict[str, Any] | None:
    """A DICOM series folder as the report names it: path, SeriesInstanceUID, number of files."""
    if path is None:
        return None
    from imaging.dicom_frames import read_header

    files = sorted(p for p in Path(path).iterdir() if p.is_file())
    uid = None
    for f in files:
        try:
            uid = str(read_header(f, ["SeriesInstanceUID"]).SeriesInstanceUID)
            break
        except (DicomSeriesError, AttributeError):  # a damaged file of the series: try the next one
            continue
    return {"path": str(path), "series_uid": uid, "n_files": len(files)}


def roi_bbox(mask: np.ndarray | None, volume: Any) -> dict[str, Any] | None:
    """The ROI's bounding box on the CT grid: voxel indices [k, j, i] (inclusive) and the LPS mm (x, y, z) of
    those corner voxels' centres; None without an ROI."""
    if mask is None or not mask.any():
        return None
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    mm = volume.world_coords(np.stack([lo, hi]).astype(float))
    return {"ijk_min": lo.tolist(), "ijk_max": hi.tolist(), "mm_min": mm[0].tolist(), "mm_max": mm[1].tolist()}


def radiology_from_result(result: dict[str, Any], bbox: dict | None, ct_dir: Path | None,
                          pet_dir: Path | None) -> dict[str, Any]:
    """The radiology section from an ingest result (``RadiologyResult`` as a dict): the fusion phenotypes
    and the ROI row's measures, the ROI (source, label, volume, bounding box) and the series read."""
    row = dict(result.get("roi_row") or {})
    phen = {**{k: v for k, v in row.items() if k not in ("patient_id", "roi", "roi_source")},
            **result.get("phenotypes", {})}
    roi = {"source": row.get("roi_source"), "label": row.get("roi"), "volume_ml": row.get("volume_ml"),
           "bbox": bbox}
    return {"phenotypes": phen, "roi": roi, "ct_series": _series(ct_dir), "pet_series": _series(pet_dir),
            "pet_error": result.get("pet_error")}


def stored_roi_path(folder: Path, patient_id: str) -> Path:
    """Where the radiology stage keeps the patient's measured ROI mask."""
    from flows.stages.radiology_study import ROI_NPZ

    return Path(folder) / ROI_NPZ.format(patient_id=patient_id)


def remeasured_roi(ps: Any, pid: str, ct: Any) -> tuple[str | None, np.ndarray | None]:
    """(ROI label, CT mask) measured again as the run measured it (its ROI patterns over the patient's
    segmentations, else the automatic lesion; the PET part on the stored SUV resampled to the CT grid): only
    for stores written before the radiology stage kept the mask."""
    from flows.stages.radiology_study import measure_study
    from imaging.roi import RoiSpec
    from imaging.volume import Volume

    folder = ps.radiology[pid]
    result = json.loads((folder / "result.json").read_text())
    suv = Volume.load_npz(folder / result["suv_npz"]) if result.get("suv_npz") else None
    cfg = ps.run_record.get("config", {})
    segs = list(getattr(ps.discovery, "segmentations", {}).get(pid, [])) if ps.discovery is not None else []
    spec = RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto"))
    study = measure_study(ct, suv, [Path(s) for s in segs if Path(s).exists()], spec)
    return study.measurement.roi, study.measurement.ct_mask


def patient_roi(ps: Any, pid: str) -> tuple[Any, str | None, np.ndarray | None, str]:
    """A cohort patient's CT (HU), ROI label, ROI mask on the CT grid and where the mask came from
    (``STORED``: the radiology stage's ``<patient>_roi.npz``; ``REMEASURED``: a store from before it)."""
    from flows.stages.radiology_study import read_roi_npz
    from imaging.volume import Volume

    folder = ps.radiology[pid]
    result = json.loads((folder / "result.json").read_text())
    ct = Volume.load_npz(folder / result["ct_npz"])
    path = stored_roi_path(folder, pid)
    if path.is_file():
        mask, info = read_roi_npz(path, ct.shape)
        return ct, info["label"], mask, STORED
    return (ct, *remeasured_roi(ps, pid, ct), REMEASURED)


def radiology_section(ps: Any, pid: str) -> dict[str, Any] | None:
    """The radiology section of a cohort patient (None without CT): ``roi.bbox`` from the stored mask (or, for
    an older store, the mask measured again), ``roi.mask_npz`` (the stored mask; null when re-measured) and
    ``roi.from`` (``stored`` or the re-measure note)."""
    if pid not in ps.radiology:
        return None
    folder = ps.radiology[pid]
    result = json.loads((folder / "result.json").read_text())
    try:
        ct, label, mask, origin = patient_roi(ps, pid)
    except SegmentationError:  # a damaged mask file: measured again rather than no box
        from imaging.volume import Volume

        ct = Volume.load_npz(folder / result["ct_npz"])
        label, mask, origin = (*remeasured_roi(ps, pid, ct), REMEASURED)
    disc = ps.discovery
    same = label == (result.get("roi_row") or {}).get("roi")  # else a segmentation file moved: no box
    out = radiology_from_result(result, roi_bbox(mask, ct) if same else None, disc.cts.get(pid) if disc else None,
                                disc.pets.get(pid) if disc else None)
    out["roi"]["from"] = origin
    out["roi"]["mask_npz"] = str(stored_roi_path(folder, pid)) if origin == STORED else None
    out["volumes"] = {"ct_hu": str(folder / result["ct_npz"]),
                      "suv_on_ct": str(folder / result["suv_npz"]) if result.get("suv_npz") else None}
    return out
