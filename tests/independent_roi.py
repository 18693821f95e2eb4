"""An independent reading of an RTSTRUCT ROI on a DICOM series (pydicom + skimage.draw.polygon only, sharing
no code with FusionRx): the reference the ROI measurement tests compare against."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import polygon


def _tm(value: str) -> dt.timedelta:
    """DICOM TM 'HHMMSS.frac' -> time of day."""
    text = str(value).strip()
    return dt.timedelta(hours=int(text[:2]), minutes=int(text[2:4]), seconds=float(text[4:] or 0))


def suv_bw_scale(first: pydicom.Dataset, slices: list[pydicom.Dataset]) -> float:
    """Pixel value -> SUVbw: 1 for Units GML (already SUV) or CT; for BQML decay-corrected to START,
    weight (g) / (injected dose decayed from injection to the scan start)."""
    if getattr(first, "Modality", "") != "PT" or first.Units == "GML":
        return 1.0
    assert first.Units == "BQML" and first.DecayCorrection == "START"
    info = first.RadiopharmaceuticalInformationSequence[0]
    scan = min([_tm(first.SeriesTime)] + [_tm(ds.AcquisitionTime) for ds in slices])
    uptake_s = (scan - _tm(info.RadiopharmaceuticalStartTime)).total_seconds()
    decayed_dose = float(info.RadionuclideTotalDose) * 2.0 ** (-uptake_s / float(info.RadionuclideHalfLife))
    return float(first.PatientWeight) * 1000.0 / decayed_dose


def independent_roi(image_dir: Path, rtstruct: Path, roi_name: str) -> dict[str, float]:
    """Voxel count, volume (ml), max and mean of one RTSTRUCT ROI on an axial series: HU for CT, SUVbw for
    PET (computed by hand from the tags). Contours beyond the series (a cropped scan) are left out."""
    slices = sorted((pydicom.dcmread(f) for f in Path(image_dir).glob("*.dcm")),
                    key=lambda ds: float(ds.ImagePositionPatient[2]))
    first = slices[0]
    assert [round(float(v), 4) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    scale = suv_bw_scale(first, slices)
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    dz = float(np.median(np.diff(z)))
    dy, dx = (float(v) for v in first.PixelSpacing)
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    rows, cols = int(first.Rows), int(first.Columns)
    rs = pydicom.dcmread(rtstruct)
    number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == roi_name)
    contours = next(c for c in rs.ROIContourSequence if int(c.ReferencedROINumber) == number).ContourSequence
    mask = np.zeros((len(slices), rows, cols), dtype=bool)
    for item in contours:
        pts = np.array([float(v) for v in item.ContourData]).reshape(-1, 3)
        k = int(np.argmin(np.abs(z - pts[0, 2])))
        if abs(z[k] - pts[0, 2]) > 0.5 * dz:
            continue
        rr, cc = polygon((pts[:, 1] - y0) / dy, (pts[:, 0] - x0) / dx, shape=(rows, cols))
        plane = np.zeros((rows, cols), dtype=bool)
        plane[rr, cc] = True
        mask[k] ^= plane  # a contour inside another on the same plane is a hole
    values = np.concatenate([(slices[k].pixel_array * float(slices[k].RescaleSlope)
                              + float(slices[k].RescaleIntercept))[mask[k]] * scale
                             for k in range(len(slices)) if mask[k].any()])
    return {"n": int(mask.sum()), "volume_ml": mask.sum() * dx * dy * dz / 1000.0,
            "max": float(values.max()), "mean": float(values.mean())}
