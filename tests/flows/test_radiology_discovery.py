"""CT/PET discovery by header index: pairs by frame of reference, a PET without CT is reported."""

from __future__ import annotations

from pathlib import Path

from flows.catalog.schema import Source
from flows.stages.radiology import discover_radiology, select_radiology_series
from imaging.dicom_index import SeriesInfo


def _series(path, pid, modality, study, frame, n=10):
    return SeriesInfo(patient_id=pid, study_uid=study, series_uid=f"{path.name}-uid", frame_of_reference_uid=frame,
                      modality=modality, files=[path / f"{k}.dcm" for k in range(n)], path=path)


def test_pairs_by_frame_of_reference_and_reports_the_rest(tmp_path):
    d = {k: tmp_path / k for k in ("a_ct", "a_ct_scout", "a_pet", "b_pet", "c_ct", "c_pet_other_study")}
    series = [_series(d["a_ct_scout"], "A", "CT", "s1", "f0", n=3),
              _series(d["a_ct"], "A", "CT", "s1", "f1"), _series(d["a_pet"], "A", "PT", "s1", "f1"),
              _series(d["b_pet"], "B", "PT", "s2", "f2"),
              _series(d["c_ct"], "C", "CT", "s3", "f3"), _series(d["c_pet_other_study"], "C", "PT", "s9", "f9")]
    cts, pets, skipped = select_radiology_series(series)
    assert cts == {"A": d["a_ct"], "C": d["c_ct"]}  # A's PET shares f1 with the 10-slice CT, not the scout
    assert pets == {"A": d["a_pet"]}
    by_path = {Path(s.file).name: s for s in skipped}
    assert set(by_path) == {"a_ct_scout", "b_pet", "c_pet_other_study"}
    assert "no CT series" in by_path["b_pet"].error and by_path["b_pet"].source == "pet"
    assert "neither FrameOfReferenceUID nor StudyInstanceUID" in by_path["c_pet_other_study"].error


def test_folder_per_patient_layout_reports_pet_without_ct(tmp_path):
    for p in ("ct/P1", "ct/P2", "pet/P1", "pet/P3"):
        (tmp_path / p).mkdir(parents=True)
    ct = Source("ct", "ct", "dicom_series", tmp_path / "ct")
    pet = Source("pet", "pet", "dicom_series", tmp_path / "pet")
    cts, pets, skipped, _ = discover_radiology(ct, pet)
    assert sorted(cts) == ["P1", "P2"] and sorted(pets) == ["P1"]
    assert len(skipped) == 1 and skipped[0].file.endswith("pet/P3") and "no CT folder" in skipped[0].error
