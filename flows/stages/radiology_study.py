"""One patient's CT/PET study in any layout + its segmentations -> ROI phenotypes (`fusionrx radiology`), and
the measured ROI kept beside the radiology result (``<patient>_roi.npz``: its box on the CT grid + the mask)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flows.skipped import Skipped
from fusion.errors import DicomSeriesError, SegmentationError
from imaging.dicom_index import SeriesInfo, index_dicom, pair_ct_pet
from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from imaging.radiomics import ibsi_features
from imaging.roi import RoiMeasurement, RoiSpec, match_rois, measure_rois
from imaging.segmentation import RoiRef, list_rois
from imaging.volume import Volume

_SEG_MODALITIES = ("RTSTRUCT", "SEG")
CT_BIN_HU, PET_BIN_SUV = 25.0, 0.5
ROI_NPZ = "{patient_id}_roi.npz"  # the measured ROI on the CT grid, beside STORE/imaging/radiology/<patient>/result.json


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


def _read_or_report(info: SeriesInfo | None, problems: list[Skipped]) -> tuple[Volume | None, SeriesInfo | None]:
    """Read a series; a series that cannot be read is reported in `problems` and left out (the other may do)."""
    if info is None:
        return None, None
    try:
        return read_series(info), info
    except DicomSeriesError as exc:
        problems.append(Skipped("ct" if info.modality == "CT" else "pet", str(info.path), str(exc)))
        return None, None


def _finite(value: Any) -> Any:
    """JSON-safe number: NaN / inf become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class StudyMeasurement:
    """One patient's ROI measurement: what ``fusionrx radiology`` reports and ``run`` stores, alike."""

    measurement: RoiMeasurement
    refs: list[RoiRef]
    radiomics: dict[str, dict[str, Any]]
    problems: list[Skipped]

    def phenotype_row(self, patient_id: str) -> dict[str, Any]:
        """The patient's row of ``fusionrx phenotypes``: ROI, its source, phenotypes, lesion totals."""
        m = self.measurement
        row = {"patient_id": patient_id, "roi": m.roi, "roi_source": m.roi_source,
               **{k: _finite(v) for k, v in m.phenotypes.items() if k not in ("roi", "roi_source")},
               **{k: _finite(v) for k, v in m.totals.items()}}
        for grid, feats in self.radiomics.items():
            row.update({f"{grid}_{k}": _finite(v) for k, v in feats.items()})
        return row

    def lesion_rows(self, patient_id: str) -> list[dict[str, Any]]:
        """One row per ROI that matched (lesion level)."""
        return [{"patient_id": patient_id, **{k: _finite(v) for k, v in r.items()}}
                for r in self.measurement.lesions]

    def write_roi(self, folder: Path, patient_id: str) -> Path | None:
        """The measured ROI's CT mask as ``folder/<patient_id>_roi.npz`` (``write_roi_npz``); None without one."""
        return write_roi_npz(Path(folder) / ROI_NPZ.format(patient_id=patient_id), self.measurement.ct_mask,
                             self.measurement.roi, self.measurement.roi_source)


def write_roi_npz(path: Path, mask: np.ndarray | None, label: str | None = None,
                  source: str | None = None) -> Path | None:
    """An ROI mask on the CT grid [k, j, i], compactly and atomically: ``shape`` (the grid), ``ijk_min`` /
    ``ijk_max`` (its bounding box, voxel indices, inclusive), ``bits`` (the mask inside the box, C order,
    np.packbits) and ``label`` / ``source`` (the ROI's name and rtstruct | seg | nifti | auto), in a compressed
    npz of plain arrays. Nothing is written (None) for an absent or empty mask."""
    if mask is None or not np.asarray(mask).any():
        return None
    from flows.store.atomic import atomic_path

    mask = np.asarray(mask, dtype=bool)
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    box = mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, shape=np.asarray(mask.shape, np.int64), ijk_min=lo.astype(np.int64),
                            ijk_max=hi.astype(np.int64), bits=np.packbits(box.reshape(-1)),
                            label=np.array(label or ""), source=np.array(source or ""))
    return Path(path)


def read_roi_npz(path: Path, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(the mask [k, j, i] bool on the CT grid, {"ijk_min", "ijk_max", "label", "source"}) of ``write_roi_npz``'s
    file. SegmentationError naming the file when it is unreadable, inconsistent, or its grid is not ``shape``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            grid, lo, hi, bits = (tuple(int(v) for v in z["shape"]), z["ijk_min"].astype(int), z["ijk_max"].astype(int),
                                  z["bits"])
            label, source = str(z["label"]), str(z["source"])
        size = hi - lo + 1
        box = np.unpackbits(bits, count=int(np.prod(size))).astype(bool).reshape(tuple(size))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise SegmentationError(f"{path}: unreadable ROI mask ({exc})") from exc
    if shape is not None and grid != tuple(shape):
        raise SegmentationError(f"{path}: ROI mask on a {grid} grid, the CT volume is {tuple(shape)}")
    if (lo < 0).any() or (hi >= np.asarray(grid)).any() or not box.any():
        raise SegmentationError(f"{path}: ROI box {lo.tolist()}..{hi.tolist()} lies outside its {grid} grid or is empty")
    mask = np.zeros(grid, dtype=bool)
    mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = box
    return mask, {"ijk_min": lo.tolist(), "ijk_max": hi.tolist(), "label": label or None, "source": source or None}


def segmentation_refs(seg_files: list[Path]) -> tuple[list[RoiRef], list[dict[str, str]]]:
    """Every ROI of the segmentation files (RTSTRUCT, SEG, NIfTI); unreadable files are reported."""
    refs: list[RoiRef] = []
    problems: list[Skipped] = []
    for path in seg_files:
        try:
            refs.extend(list_rois(path))
        except SegmentationError as exc:
            problems.append(Skipped("segmentation", str(path), str(exc)))
    return refs, problems


def measure_study(ct: Volume | None, suv: Volume | None, seg_files: list[Path], spec: RoiSpec,
                  radiomics: bool = False, texture: bool = False) -> StudyMeasurement:
    """The one ROI measurement of FusionRx: ROIs matching ``spec`` (else its fallback), phenotypes on each
    grid, lesion rows; with ``radiomics`` the IBSI morphology / intensity / histogram features and with
    ``texture`` also the six IBSI texture families (mirp; seconds per ROI), on fixed bins (CT 25 HU, PET 0.5 SUV)."""
    refs, problems = segmentation_refs(seg_files)
    m = measure_rois(ct, suv, refs, spec)
    features: dict[str, dict[str, Any]] = {}
    for name, volume, mask, bin_width in (("ct", ct, m.ct_mask, CT_BIN_HU), ("pet", suv, m.pet_mask, PET_BIN_SUV)):
        if volume is None or mask is None or not mask.any() or not (radiomics or texture):
            continue
        values = dict(ibsi_features(volume, mask, bin_width)) if radiomics else {}
        if texture:
            from imaging.radiomics_texture import texture_features

            values.update(texture_features(volume, mask, bin_width=bin_width))
        features[name] = {k: _finite(v) for k, v in values.items()}
    return StudyMeasurement(m, refs, features, problems + [Skipped("segmentation", p["path"], p["error"])
                                                           for p in m.problems])


def patient_segmentations(index: list[SeriesInfo], folders: list[Path]) -> list[Path]:
    """A patient's segmentation files: RTSTRUCT / SEG series of the index, NIfTI files under ``folders``."""
    files = [f for s in index if s.modality in _SEG_MODALITIES for f in s.files]
    for folder in folders:
        files += sorted(p for p in Path(folder).rglob("*.nii*") if p.name.endswith((".nii", ".nii.gz")))
    return list(dict.fromkeys(files))


def analyse(directory: Path, roi_name: str | None, radiomics: bool = False,
            texture: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find, read and measure one patient's study: (JSON report, arrays for the output files).

    With ``roi_name`` (a name or shell-style pattern) that ROI is measured, and an ROI that matches nothing
    or lies off both grids is an error; without it the automatic lesion is measured and the report's
    ``note`` says so, naming the ROIs that were found.
    """
    if not directory.is_dir():
        raise DicomSeriesError(f"{directory}: not a directory of DICOM files")
    index = index_dicom(directory)
    problems = [Skipped("dicom", path, error) for path, error in index.problems]
    series = [s for s in index if s.modality in ("CT", "PT")]
    seg_files = patient_segmentations(list(index), [directory])
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
                               + "; ".join(p.error for p in problems[-2:]))
    spec = RoiSpec.from_config([roi_name] if roi_name is not None else None,
                               fallback="none" if roi_name is not None else "auto")
    study = measure_study(ct, suv, seg_files, spec, radiomics, texture)
    problems += study.problems
    m = study.measurement
    if roi_name is not None and not m.measured:
        names = [r.name for r in study.refs]
        if not match_rois(study.refs, [roi_name]):
            raise SegmentationError(f"{directory}: ROI {roi_name!r} not found; ROIs found: {names}")
        raise SegmentationError(f"{directory}: ROI {roi_name!r} does not intersect the CT or PET grid "
                                f"(ROIs found: {names})" + "".join(f"; {p.error}" for p in study.problems))
    note = None
    if roi_name is None:
        found = [r.name for r in study.refs]
        note = (f"no --roi given: measured the automatic lesion ({m.roi}); ROIs found: {found}" if found
                else f"no --roi given and no segmentation found: measured the automatic lesion ({m.roi})")
    roles = {info.series_uid: role for info, role in ((ct_info, "ct"), (pet_info, "pet")) if info is not None}
    pid = patients[0] if patients else ""
    report = {
        "patient_id": pid,
        "series": [_series_json(s, roles.get(s.series_uid)) for s in series],
        "rois": [r.name for r in study.refs],
        "segmentations": [{"name": r.name, "kind": r.kind, "path": r.path} for r in study.refs],
        **({"note": note} if note else {}),
        "phenotypes": {"roi": m.roi, **{k: _finite(v) for k, v in m.phenotypes.items() if k != "roi"}},
        "lesions": study.lesion_rows(pid),
        "totals": {k: _finite(v) for k, v in m.totals.items()},
        **({"radiomics": study.radiomics} if radiomics or texture else {}),
        "problems": [{"path": p.file, "error": p.error} for p in problems],
    }
    return report, {"ct": ct, "suv": suv, "ct_mask": m.ct_mask, "pet_mask": m.pet_mask, "roi": m.roi}
