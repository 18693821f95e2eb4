"""Patient identity: a volume's meta holds no identifying header value, and `flows.pacs.deidentify` writes
copies from which the identity is gone while SUV (FusionRx's own reader) and geometry are exactly what they
were and RTSTRUCT and SEG references still resolve (generated series and the real TCIA ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from flows.pacs.deidentify import Deidentifier, PseudonymMap, deidentify_folder
from flows.synthetic.dicom_writer import ct_slice_uid, write_ct_series, write_pet_series
from flows.synthetic.identity import fake_identity
from flows.synthetic.rtstruct_writer import write_sphere_rtstruct
from imaging.dicom_series import read_dicom_series, read_dicom_series_headers
from imaging.pet import read_pet_suv
from imaging.rtstruct import rasterise_rtstruct_roi, read_rtstruct_rois
from tests.realdata import realdata_dir

PID = "TCGA-FX-0042"
CENTRE_MM = (-40.0, 5.0, 10.0)
IDENTIFYING = ("PatientName", "PatientBirthDate", "PatientAddress", "OtherPatientNames", "PatientTelephoneNumbers",
               "ReferringPhysicianName", "InstitutionName", "InstitutionAddress", "AccessionNumber")


def _pet(out: Path, units: str = "BQML", pid: str = PID) -> Path:
    write_pet_series(out, patient_id=pid, tumour_centre_mm=CENTRE_MM, tumour_radius_mm=15.0, tumour_suv=7.5,
                     weight_kg=71.0, dose_bq=3.5e8, injection_to_scan_s=3900.0, seed=4, units=units,
                     noise_fraction=0.05)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A generated CT + RTSTRUCT (sphere contours on the CT slices) + PET of one patient, with a fake identity."""
    root = tmp_path_factory.mktemp("study")
    ct = write_ct_series(root / "ct", patient_id=PID, tumour_centre_mm=CENTRE_MM, tumour_radius_mm=15.0, seed=3,
                         shape=(24, 64, 64), pixel_spacing_mm=(3.0, 3.0), slice_thickness_mm=4.0)
    z = ct["origin_mm"][2] + 4.0 * np.arange(24)
    write_sphere_rtstruct(root / "rt" / "rs.dcm", patient_id=PID, study_uid=ct["study_uid"],
                          frame_of_reference_uid=ct["frame_of_reference_uid"], ct_series_uid=ct["series_uid"],
                          ct_slice_uids=[ct_slice_uid(PID, 3, k) for k in range(24)], slice_z_mm=z,
                          centre_mm=np.array(CENTRE_MM), radius_mm=15.0)
    _pet(root / "pet")
    return {"root": root, "ct": ct}


def test_volume_meta_holds_no_identifying_value(study):
    ident = fake_identity(PID)
    for folder, read in (("ct", read_dicom_series), ("pet", read_pet_suv)):
        volume = read(study["root"] / folder)
        text = json.dumps(volume.meta, default=str).lower()
        hdr = pydicom.dcmread(next((study["root"] / folder).glob("*.dcm")), stop_before_pixels=True)
        values = [str(hdr[k].value) for k in IDENTIFYING]
        assert str(hdr.PatientName) == ident.patient_name and hdr.PatientBirthDate == ident.birth_date
        for needle in values + ident.search_strings():
            for part in needle.split("^"):
                assert not part or part.lower() not in text, (folder, part)
        assert volume.meta["patient_id"] == PID  # the key the catalog checks stays


def _deid(src: Path, dst: Path, map_path: Path) -> tuple[dict, PseudonymMap]:
    pseudonyms = PseudonymMap.load(map_path)
    return deidentify_folder(src, dst, pseudonyms), pseudonyms


def _headers(root: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(root.rglob("*.dcm"))]


@pytest.mark.parametrize("units", ["BQML", "CNTS", "GML"])
def test_suv_unchanged_and_identity_gone_after_deidentification(tmp_path, units):
    src = _pet(tmp_path / "src", units)
    report, pseudonyms = _deid(src, tmp_path / "shared", tmp_path / "site" / "map.json")
    assert report["written"] == 20 and not report["failed"]
    before, after = read_pet_suv(src), read_pet_suv(tmp_path / "shared")
    assert np.array_equal(before.array, after.array) and before.meta["suv_scale"] == after.meta["suv_scale"]
    assert np.array_equal(before.affine, after.affine)
    if units == "BQML":  # decay over the same uptake interval, on shifted dates
        assert after.meta["uptake_time_s"] == before.meta["uptake_time_s"] == pytest.approx(3900.0, abs=0.01)
    ident, entry, orig = fake_identity(PID), pseudonyms.patients[PID], _headers(src)[0]
    for ds in _headers(tmp_path / "shared"):
        assert ds.PatientID == ds.PatientName == entry["pseudonym"] and ds.PatientIdentityRemoved == "YES"
        assert all(not ds.get(k) for k in IDENTIFYING[1:])  # PatientName: the pseudonym
        assert ds.PatientWeight == 71.0 and ds.PatientSex == "O"  # patient characteristics retained
        raw = ds.to_json().lower()
        assert not any(s.lower() in raw for s in ident.search_strings() + [PID.lower()])
        assert ds.StudyDate == (np.datetime64("2024-01-15") + entry["date_shift_days"]).astype(str).replace("-", "")
        assert ds.SeriesTime == orig.SeriesTime  # times of day stay
    uids = {str(d.SOPInstanceUID) for d in _headers(src)} | {str(_headers(src)[0].StudyInstanceUID)}
    out_uids = {str(d.SOPInstanceUID) for d in _headers(tmp_path / "shared")}
    assert not uids & out_uids and all(u.startswith("2.25.") and len(u) <= 64 for u in out_uids)
    assert json.loads((tmp_path / "site" / "map.json").read_text())["patients"][PID] == entry


def test_uids_dates_and_pseudonyms_consistent_across_runs_and_patients(tmp_path):
    _pet(tmp_path / "a", pid=PID)
    _pet(tmp_path / "b", pid="TCGA-FX-0043")
    map_path = tmp_path / "site" / "map.json"
    _deid(tmp_path / "a", tmp_path / "out1", map_path)
    _deid(tmp_path / "b", tmp_path / "out1", map_path)
    _deid(tmp_path / "a", tmp_path / "out2", map_path)  # a later run with the saved map: same output
    one = {p.relative_to(tmp_path / "out1") for p in (tmp_path / "out1").rglob("*.dcm")}
    two = {p.relative_to(tmp_path / "out2") for p in (tmp_path / "out2").rglob("*.dcm")}
    assert two < one and len(two) == 20 and len(one) == 40
    entries = json.loads(map_path.read_text())["patients"]
    assert entries[PID]["pseudonym"] != entries["TCGA-FX-0043"]["pseudonym"]
    assert entries[PID]["date_shift_days"] != entries["TCGA-FX-0043"]["date_shift_days"]
    assert all(-3650 <= e["date_shift_days"] <= -366 for e in entries.values())
    other = PseudonymMap.load(tmp_path / "elsewhere.json")  # another site, another key: other UIDs
    assert Deidentifier(other).uid("1.2.3.4") != Deidentifier(PseudonymMap.load(map_path)).uid("1.2.3.4")


def test_rtstruct_references_resolve_after_deidentification(study, tmp_path):
    root = study["root"]
    _deid(root, tmp_path / "shared", tmp_path / "map.json")
    files = _headers(tmp_path / "shared")
    cts = [d for d in files if d.Modality == "CT"]
    rs = next(d for d in files if d.Modality == "RTSTRUCT")
    ct_sops = {str(d.SOPInstanceUID) for d in cts}
    refs = [str(img.ReferencedSOPInstanceUID) for roi in rs.ROIContourSequence for c in roi.ContourSequence
            for img in c.ContourImageSequence]
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    series_ref = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert refs and set(refs) <= ct_sops
    assert {str(img.ReferencedSOPInstanceUID) for img in series_ref.ContourImageSequence} == ct_sops
    assert series_ref.SeriesInstanceUID == cts[0].SeriesInstanceUID
    assert frame.FrameOfReferenceUID == rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID \
        == cts[0].FrameOfReferenceUID != study["ct"]["frame_of_reference_uid"]
    assert frame.RTReferencedStudySequence[0].ReferencedSOPInstanceUID == cts[0].StudyInstanceUID
    # FusionRx's own path: the contours rasterise on the de-identified CT (frame of reference checked) exactly
    # as on the original
    masks = []
    for ct_dir, rs_path in ((root / "ct", root / "rt" / "rs.dcm"),
                            (Path(cts[0].filename).parent, Path(rs.filename))):
        ct = read_dicom_series(ct_dir)
        roi = read_rtstruct_rois(pydicom.dcmread(rs_path), rs_path)[0]
        masks.append(rasterise_rtstruct_roi(roi, ct, rs_path))
    assert masks[0].sum() > 100 and np.array_equal(masks[0], masks[1])


def test_map_inside_the_shared_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        deidentify_folder(tmp_path, tmp_path / "shared", PseudonymMap.load(tmp_path / "shared" / "map.json"))


def test_real_tcia_pet_suv_unchanged_after_deidentification(tmp_path):
    src = realdata_dir("dicom", "sts_raw_pet", "STS_001", "image")
    report, _ = _deid(src, tmp_path / "shared", tmp_path / "map.json")
    assert report["written"] == 267 and not report["failed"]
    before, after = read_pet_suv(src), read_pet_suv(tmp_path / "shared")
    assert np.array_equal(before.array, after.array) and before.meta["suv_scale"] == after.meta["suv_scale"]
    assert after.meta["uptake_time_s"] == before.meta["uptake_time_s"]
    _, headers = read_dicom_series_headers(tmp_path / "shared")
    orig = pydicom.dcmread(next(src.glob("*.dcm")), stop_before_pixels=True)
    assert all(h.PatientID != orig.PatientID and not h.get("PatientBirthDate") for h in headers)
    assert all(h.SeriesTime == orig.SeriesTime and h.SeriesDate != orig.SeriesDate for h in headers)


def test_real_tcia_study_references_stay_consistent(tmp_path):
    src = realdata_dir("dicom", "sts_cropped", "STS_001")
    _deid(src, tmp_path / "shared", tmp_path / "map.json")
    files = _headers(tmp_path / "shared")
    by_mod = {m: [d for d in files if d.Modality == m] for m in ("CT", "PT", "RTSTRUCT")}
    assert all(by_mod.values())
    assert len({str(d.StudyInstanceUID) for d in files}) == len({str(d.StudyInstanceUID) for d in _headers(src)})
    fors = {str(d.FrameOfReferenceUID) for d in by_mod["CT"] + by_mod["PT"]}
    for rs in by_mod["RTSTRUCT"]:
        assert {str(r.ReferencedFrameOfReferenceUID) for r in rs.StructureSetROISequence} <= fors
    before, after = read_pet_suv(src / "PET" / "image"), read_pet_suv(
        next(d for d in {p.parent for p in (tmp_path / "shared").rglob("*.dcm")}
             if pydicom.dcmread(next(d.glob("*.dcm")), stop_before_pixels=True).Modality == "PT"))
    assert np.array_equal(before.array, after.array)


def test_seg_references_resolve_after_deidentification(study, tmp_path):
    import highdicom as hd

    from imaging.segmentation import list_rois, roi_mask

    ct = read_dicom_series(study["root"] / "ct")
    sources = [pydicom.dcmread(study["root"] / "ct" / f) for f in ct.meta["files"]]
    kk, jj, ii = np.meshgrid(*(np.arange(s) for s in ct.shape), indexing="ij")
    mask = ((kk - 12) / 5.0) ** 2 + ((jj - 30) / 9.0) ** 2 + ((ii - 34) / 7.0) ** 2 <= 1
    code = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    gtv = hd.seg.SegmentDescription(1, "GTV", code, code, hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[gtv],
        series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="FusionRx test", manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    src = tmp_path / "src"
    (src / "seg").mkdir(parents=True)
    seg.save_as(src / "seg" / "seg.dcm")
    for f in ct.meta["files"]:
        (src / "ct").mkdir(exist_ok=True)
        (src / "ct" / f).write_bytes((study["root"] / "ct" / f).read_bytes())
    _deid(src, tmp_path / "shared", tmp_path / "map.json")
    files = _headers(tmp_path / "shared")
    cts = [d for d in files if d.Modality == "CT"]
    out_seg = next(d for d in files if d.Modality == "SEG")
    refs = {str(r.ReferencedSOPInstanceUID) for s in out_seg.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence}
    assert refs == {str(d.SOPInstanceUID) for d in cts}
    assert out_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == cts[0].SeriesInstanceUID
    assert out_seg.FrameOfReferenceUID == cts[0].FrameOfReferenceUID != sources[0].FrameOfReferenceUID
    shared_ct = read_dicom_series(Path(cts[0].filename).parent)
    got = roi_mask(list_rois(Path(out_seg.filename))[0], shared_ct)
    assert mask.sum() > 100 and np.array_equal(got, mask)
