"""The radiology part of a rendered patient report: the ROI on the CT grid (the mask the radiology stage kept, else
placed again by the pipeline's ROI path), the PET/CT overlay with the ROI contour, and the ROI as a DICOM SEG
over the CT (highdicom)."""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flows.patients.figures import figure as _figure, need as _need, png as _png
from flows.store.atomic import atomic_path
from fusion.errors import DicomSeriesError, SegmentationError


# ---- radiology: the ROI on the CT, the PET/CT overlay, the SEG -------------------------------------------------

@dataclass
class RoiOnCt:
    """The measured ROI on the CT grid: CT (HU) with its files' headers in slice order, SUV resampled onto the
    CT (None without PET), the boolean mask [k, j, i], its label and source (rtstruct | seg | nifti | auto);
    mask, label and source are None when the run measured no ROI for the patient."""

    ct: Any
    headers: list
    suv_on_ct: Any
    mask: np.ndarray | None
    label: str | None
    source: str | None


def _series_dir(radiology: dict, key: str) -> Path | None:
    """The series folder radiology[key] names (a path, or a dict with 'path'); None when absent."""
    value = radiology.get(key)
    if isinstance(value, dict):
        value = value.get("path")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise DicomSeriesError(f"patient report: radiology.{key} {str(path)!r} is not a DICOM series folder")
    return path


def _segmentation_path(roi: dict, store: Path, patient_id: str) -> str:
    """The segmentation file holding a named ROI: roi['path'], else the lesion row of the radiology stage's
    result (STORE/imaging/radiology/<patient>/result.json) of the same name."""
    if roi.get("path"):
        return str(roi["path"])
    result = Path(store) / "imaging" / "radiology" / patient_id / "result.json"
    if result.is_file():
        for lesion in json.loads(result.read_text()).get("lesions", []):
            if lesion.get("name") == roi["label"] and lesion.get("path"):
                return str(lesion["path"])
    raise SegmentationError(f"{result}: no lesion row names ROI {roi['label']!r} with its segmentation file")


def roi_on_ct(report: dict, store: Path) -> RoiOnCt:
    """Read the patient's CT (and PET) and the ROI the report names: the mask the radiology stage kept
    (radiology.roi.mask_npz), else placed again by the pipeline's own ROI path (imaging.roi.measure_rois): the
    automatic lesion for source 'auto', else the named ROI of its file."""
    from imaging.dicom_series import read_dicom_series_headers
    from imaging.pet import read_pet_suv
    from imaging.resample import resample_to_reference
    from imaging.roi import RoiSpec, measure_rois
    from imaging.segmentation import list_rois

    radiology = _need(report, "radiology", "report")
    roi = radiology.get("roi") or {}
    label, source = roi.get("label"), roi.get("source")
    ct_dir = _series_dir(radiology, "ct_series")
    if ct_dir is None:
        raise DicomSeriesError("patient report: radiology.ct_series is empty; the ROI is drawn over the CT")
    ct, headers = read_dicom_series_headers(ct_dir)
    if ct.units != "HU":
        raise DicomSeriesError(f"{ct_dir}: series has units {ct.units}, expected a CT in HU")
    pet_dir = _series_dir(radiology, "pet_series")
    suv = read_pet_suv(pet_dir) if pet_dir is not None else None
    if label is None:  # the run measured no ROI for this patient: the images without one
        suv_on_ct = resample_to_reference(suv, ct, order=1, fill=0.0) if suv is not None else None
        return RoiOnCt(ct, headers, suv_on_ct, None, None, None)
    if roi.get("mask_npz") and Path(roi["mask_npz"]).is_file():  # the mask the radiology stage kept
        from flows.stages.radiology_study import read_roi_npz

        mask, _ = read_roi_npz(Path(roi["mask_npz"]), ct.shape)
        suv_on_ct = resample_to_reference(suv, ct, order=1, fill=0.0) if suv is not None else None
        return RoiOnCt(ct, headers, suv_on_ct, mask, label, source)
    if source == "auto":
        refs, spec = [], RoiSpec(fallback="auto")
    else:
        path = _segmentation_path(roi, store, report["patient_id"])
        refs = [r for r in list_rois(path) if r.name == label]
        pattern = glob.escape(label)
        spec = RoiSpec(patterns={"ct": (pattern,), "pet": (pattern,)}, fallback="none")
    m = measure_rois(ct, suv, refs, spec)
    if m.ct_mask is None or not m.ct_mask.any():
        raise SegmentationError(f"{ct_dir}: ROI {label!r} ({source}) does not intersect the CT grid")
    suv_on_ct = resample_to_reference(suv, ct, order=1, fill=0.0) if suv is not None else None
    return RoiOnCt(ct, headers, suv_on_ct, m.ct_mask, m.roi or label, m.roi_source or source)


def pet_ct_png(roi: RoiOnCt) -> bytes:
    """Axial CT slice through the ROI's centre of mass, SUV in colour over it, the ROI contour in cyan."""
    from flows.stages.radiology_outputs import CT_WINDOW_HU

    ct = roi.ct
    k = int(round(float(np.argwhere(roi.mask)[:, 0].mean()))) if roi.mask is not None else ct.shape[0] // 2
    dk, dj, di = ct.spacing_mm
    extent = (-0.5 * di, (ct.shape[2] - 0.5) * di, (ct.shape[1] - 0.5) * dj, -0.5 * dj)
    fig = _figure(6.0, 6.0 * ct.shape[1] * dj / (ct.shape[2] * di) + 0.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(ct.array[k], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], extent=extent,
              interpolation="nearest")
    if roi.suv_on_ct is not None:
        top = float(np.nanpercentile(roi.suv_on_ct.array, 99.9)) or 1.0
        image = ax.imshow(np.ma.masked_less(roi.suv_on_ct.array[k], 0.1 * top), cmap="hot", vmin=0.0, vmax=top,
                          alpha=0.55, extent=extent, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=roi.suv_on_ct.units)
    if roi.mask is not None and roi.mask[k].any():
        ax.contour(roi.mask[k].astype(float), levels=[0.5], colors="cyan", linewidths=1.2, extent=extent,
                   origin="upper")
    what = f"ROI {roi.label} ({roi.source}): {int(roi.mask.sum())} voxels" if roi.mask is not None else "no ROI"
    ax.set_title(f"{what}; slice {k} of {ct.shape[0]}", fontsize=9)
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    return _png(fig)


def write_roi_seg(roi: RoiOnCt, path: Path, software_version: str = "") -> Path:
    """The ROI as a BINARY DICOM SEG (highdicom) over the CT series: one segment, frames referencing the CT
    instances they cover (empty slices left out), in the CT's frame of reference."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if roi.mask is None:
        raise SegmentationError(f"{roi.ct.meta.get('series_uid')}: no ROI was measured; nothing to write as a SEG")
    if len(roi.headers) != roi.mask.shape[0]:
        raise DicomSeriesError(f"{roi.ct.meta.get('series_uid')}: {len(roi.headers)} CT files for "
                               f"{roi.mask.shape[0]} slices; a SEG needs one single-frame file per slice")
    tol_mm = 0.25 * roi.ct.spacing_mm[0]  # a misplaced file is a whole slice off
    for k, h in enumerate(roi.headers):  # the volume's slice k is this file's plane
        if not np.allclose(roi.ct.world_coords(np.array([k, 0, 0])), [float(v) for v in h.ImagePositionPatient],
                           atol=tol_mm):
            raise DicomSeriesError(f"{getattr(h, 'filename', f'CT file {k}')}: ImagePositionPatient is not the "
                                   f"origin of slice {k} of the CT volume")
    auto = roi.source == "auto"
    algorithm = hd.AlgorithmIdentificationSequence(name="FusionRx automatic lesion", version=software_version or "1",
                                                   family=codes.cid7162.ArtificialIntelligence) if auto else None
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=roi.label[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if auto
                        else hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=roi.headers, pixel_array=roi.mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="FusionRx", manufacturer_model_name="FusionRx patient report",
        software_versions=software_version or "unknown", device_serial_number="0",
        series_description=f"FusionRx ROI {roi.label}"[:64])
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
