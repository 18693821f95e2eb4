"""Synthetic RTSTRUCT (pydicom) of a planted spherical tumour, and the TCIA download layout.

The structure set holds one closed planar contour per CT slice that cuts the sphere (a polygon on
the sphere's circle in that slice plane, LPS mm), referencing the CT's FrameOfReferenceUID and its
slice SOPInstanceUIDs, as treatment-planning and annotation tools write them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from flows.synthetic.dicom_writer import new_instance
from flows.synthetic.identity import FakeIdentity, fake_identity, write_identity

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def tcia_study_dir(collection_dir: Path, patient_id: str, study_date: str, study_description: str,
                   study_uid: str) -> Path:
    """TCIA download folder of a study: <collection>/<PatientID>/<MM-DD-YYYY>-NA-<description>-<uid tail>."""
    date = f"{study_date[4:6]}-{study_date[6:8]}-{study_date[:4]}"
    return collection_dir / patient_id / f"{date}-NA-{study_description}-{study_uid.replace('.', '')[-5:]}"


def tcia_series_dir(study_dir: Path, series_number: int, series_description: str, series_uid: str) -> Path:
    """TCIA download folder of a series: <study>/<SeriesNumber>.000000-<description>-<uid tail>."""
    return study_dir / f"{series_number}.000000-{series_description}-{series_uid.replace('.', '')[-5:]}"


def rtstruct_series_uid(patient_id: str, ct_series_uid: str) -> str:
    """SeriesInstanceUID of the synthetic RTSTRUCT drawn on that CT."""
    return generate_uid(entropy_srcs=[f"fusionrx-rtstruct-series|{patient_id}|{ct_series_uid}"])


def sphere_contours_mm(centre_mm: np.ndarray, radius_mm: float, slice_z_mm: np.ndarray,
                       n_points: int = 48) -> list[np.ndarray]:
    """Closed polygons [n_points, 3] (LPS mm) of the sphere's cut by each axial plane z that it crosses."""
    out = []
    for z in slice_z_mm:
        dz = float(z) - float(centre_mm[2])
        if abs(dz) >= radius_mm:
            out.append(np.zeros((0, 3)))
            continue
        r = np.sqrt(radius_mm**2 - dz**2)
        t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
        out.append(np.column_stack([centre_mm[0] + r * np.cos(t), centre_mm[1] + r * np.sin(t), np.full(n_points, z)]))
    return out


def write_sphere_rtstruct(path: str | Path, *, patient_id: str, study_uid: str, frame_of_reference_uid: str,
                          ct_series_uid: str, ct_slice_uids: list[str], slice_z_mm: np.ndarray,
                          centre_mm: np.ndarray, radius_mm: float, roi_name: str = "GTV",
                          study_date: str = "20240115", identity: FakeIdentity | None = None) -> dict:
    """Write an RTSTRUCT with one ROI (the sphere's contours on the CT slices); returns its truth. The patient's
    made-up identity (`identity`, default: the patient id's seed-0 one) is written as the images carry it."""
    path = Path(path)
    sop_uid = generate_uid(entropy_srcs=[f"fusionrx-rtstruct|{patient_id}|{ct_series_uid}"])
    series_uid = rtstruct_series_uid(patient_id, ct_series_uid)
    ds = new_instance(RTSTRUCT_STORAGE, sop_uid)
    ds.PatientID = patient_id
    write_identity(ds, identity or fake_identity(patient_id))
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, study_date, "090000", "1"
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", series_uid, 4
    ds.SeriesDescription = "Tumour contours"
    ds.Manufacturer = "FusionRx synthetic"
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "GTV", study_date, "120000"
    image_refs = []
    for uid in ct_slice_uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, uid
        image_refs.append(ref)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = ct_series_uid
    series_ref.ContourImageSequence = Sequence(image_refs)
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = study_uid
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_of_reference_uid
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])
    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = 1, frame_of_reference_uid, roi_name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contours = []
    polygons = sphere_contours_mm(np.asarray(centre_mm, float), radius_mm, np.asarray(slice_z_mm, float))
    for uid, poly in zip(ct_slice_uids, polygons):
        if not len(poly):
            continue
        c = Dataset()
        img = Dataset()
        img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, uid
        c.ContourImageSequence = Sequence([img])
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(poly)
        c.ContourData = [f"{v:.4f}" for v in poly.ravel()]
        contours.append(c)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([roi_contour])
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = 1, 1, "GTV"
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([obs])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return {"path": str(path), "roi_name": roi_name, "series_uid": series_uid, "n_contours": len(contours),
            "volume_ml": float(4.0 / 3.0 * np.pi * radius_mm**3 / 1000.0)}
