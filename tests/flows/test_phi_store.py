"""Patient identity stays out of the store: the generated cohort's DICOM headers carry made-up names, birth
dates, addresses, telephone numbers, physicians, institutions and accession numbers (as hospital files do);
after a pipeline run none of them is in any file of the store (compressed and binary files opened), in the
run's summary or in the Prefect logs."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.flows.phi_search import find_strings


def _needles(ds: pydicom.Dataset) -> list[str]:
    """The identifying values of one header as search strings (name parts, birth date, street, ...)."""
    out = [part for pn in (ds.PatientName, ds.OtherPatientNames, ds.ReferringPhysicianName)
           for part in str(pn).split("^")[:2] if len(part) >= 4]
    out += [str(ds.PatientBirthDate), str(ds.PatientAddress).split(",")[0].split(" ", 1)[1],
            str(ds.PatientTelephoneNumbers), str(ds.InstitutionName), str(ds.AccessionNumber)]
    return out


def cohort_identities(data: Path) -> dict[str, list[str]]:
    """PatientID -> the identifying strings its DICOM headers carry (one header per series folder)."""
    out: dict[str, set[str]] = {}
    for folder in sorted({p.parent for p in (data / "imaging").rglob("*.dcm")}):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        out.setdefault(str(ds.PatientID), set()).update(_needles(ds))
    return {pid: sorted(v) for pid, v in out.items()}


def test_generated_headers_carry_realistic_identities(small_cohort):
    ids = cohort_identities(small_cohort)
    assert len(ids) == 12
    for pid, needles in ids.items():
        ds = pydicom.dcmread(next((small_cohort / "imaging").rglob(f"{pid}/**/*.dcm")), stop_before_pixels=True)
        family, given = str(ds.PatientName).split("^")
        assert family.replace("-", "").isalpha() and given.isalpha() and family in needles
        assert 1935 <= int(str(ds.PatientBirthDate)[:4]) <= 1975 and len(str(ds.PatientBirthDate)) == 8
        assert str(ds.PatientAddress)[0].isdigit() and str(ds.PatientTelephoneNumbers).startswith("+1-555-")
    names = {n for v in ids.values() for n in v}
    assert len(names) >= 40  # distinct people, not one name for all
    # the same patient has the same identity in CT, PET and RTSTRUCT: one set of needles per patient
    assert all(len(v) <= 10 for v in ids.values())


def test_search_opens_every_container_kind(tmp_path):
    """The search finds a name hidden in each kind of container the store uses, and nothing that is absent."""
    import h5py
    import pandas as pd

    name, date = "Hollingsworth^Margarethe", "19571225"
    np.savez_compressed(tmp_path / "vol.npz", array=np.zeros(3), meta=np.array(json.dumps({"n": name})))
    (tmp_path / "log.json.gz").write_bytes(gzip.compress(json.dumps({"birth": date}).encode()))
    with h5py.File(tmp_path / "attr.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(4)).attrs["patient"] = name
    with h5py.File(tmp_path / "ds.h5", "w") as f:
        f.create_dataset("names", data=np.array([date.encode()] * 500), compression="gzip")
    pd.DataFrame({"who": [f"{i} {name}" for i in range(200)]}).to_parquet(
        tmp_path / "t.parquet", compression="zstd", write_statistics=False)
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        con.execute("create table t (v text)")
        con.execute("insert into t values (?)", (name,))
    con.close()
    (tmp_path / "report.txt").write_text(f"auc 0.{date}3 born {date}.")  # a float's digits are no date
    files = {p.name for p in tmp_path.iterdir()}
    for hidden in ("vol.npz", "log.json.gz", "ds.h5", "t.parquet"):  # a plain byte search misses these
        raw = (tmp_path / hidden).read_bytes()
        assert b"Hollingsworth" not in raw and date.encode() not in raw, hidden
    hits = find_strings(tmp_path, ["Hollingsworth", "Margarethe", date, "Pemberton"])
    found = {(Path(w.split("::")[0]).name, n) for w, n in hits}
    assert {f for f, _ in found} == files
    assert not any(n == "Pemberton" or n.startswith("<not searchable") for _, n in found)
    assert find_strings(tmp_path / "report.txt", [date]) == [(str(tmp_path / "report.txt"), date)]
    (tmp_path / "report.txt").write_text(f"auc 0.{date}3")
    assert not find_strings(tmp_path / "report.txt", [date])


def test_cohort_dicom_itself_is_found(small_cohort):
    """Control: the search sees the identities where they are (the cohort's own DICOM files)."""
    pid, needles = next(iter(cohort_identities(small_cohort).items()))
    ct = next((small_cohort / "imaging").rglob(f"{pid}/**/1-001.dcm"))
    assert {n for _, n in find_strings(ct, needles)} >= {needles[0]} and len(find_strings(ct, needles)) >= 8


@pytest.mark.usefixtures("one_torch_thread")
def test_no_identity_in_the_store_reports_logs_or_summary(tiny_run, tiny_cohort, tmp_path):
    import prefect.settings

    ids = cohort_identities(tiny_cohort["data"])
    needles = sorted({n for v in ids.values() for n in v})
    store = Path(tiny_run["store"])
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.suffix == ".npz" for p in files) and any(p.suffix == ".parquet" for p in files)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(tiny_run["summary"], default=str))
    hits = find_strings(store, needles) + find_strings(summary, needles)
    db_url = str(prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    prefect_db = Path(db_url.split("///", 1)[-1])  # the session harness's SQLite: the run's task and flow logs
    assert db_url.startswith("sqlite") and prefect_db.exists(), db_url
    hits += find_strings(prefect_db.parent, needles)  # with its -wal file
    assert not hits, f"identifying values found: {hits[:10]}"


class _FolderPacs:
    """A PACS over a folder of DICOM files (what ``flows.pacs.pull`` asks of DICOMweb and DIMSE)."""

    def __init__(self, root: Path) -> None:
        self.files: dict[tuple[str, str, str], Path] = {}
        self.patient: dict[str, str] = {}
        for f in sorted(root.rglob("*.dcm")):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            self.files[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))] = f
            self.patient[str(ds.StudyInstanceUID)] = str(ds.PatientID)

    def find_studies(self, patient_id=None, study_uid=None):
        from flows.pacs.layout import StudyRef

        return [StudyRef(pid, s) for s, pid in sorted(self.patient.items()) if patient_id in (None, pid)]

    def series_of(self, study_uid):
        return sorted({se for st, se, _ in self.files if st == study_uid})

    def instances_of(self, study_uid, series_uid):
        return sorted(sop for st, se, sop in self.files if (st, se) == (study_uid, series_uid))

    def retrieve(self, study_uid, series_uid, sop_uids):
        return [pydicom.dcmread(f) for (st, se, sop), f in sorted(self.files.items())
                if (st, se) == (study_uid, series_uid) and (sop_uids is None or sop in sop_uids)]


def test_pull_deidentify_writes_only_deidentified_copies_once(small_cohort, tmp_path, monkeypatch, capsys):
    """`fusionrx pull --deidentify`: the copies carry no identity, the pseudonym map lands beside OUT (never
    inside), the report names the pseudonym, and a second pull finds everything already there."""
    import flows.pacs
    from flows.cli import main
    from flows.pacs.pull import pull

    ids = cohort_identities(small_cohort)
    pid = sorted(ids)[0]
    pacs = _FolderPacs(next((small_cohort / "imaging").rglob(pid)))
    monkeypatch.setattr(flows.pacs, "pull_dicomweb", lambda url, out, patient, study, **kw: pull(
        pacs, out, patient, study, deidentifier=kw["deidentifier"]))
    out = tmp_path / "shared"
    runs = []
    for _ in range(2):
        assert main(["pull", "--dicomweb", "http://pacs.invalid/dicom-web", "--out", str(out), "--deidentify",
                     "--format", "json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    n = len(pacs.files)
    assert runs[0]["pulled"] == n and runs[1]["pulled"] == 0 and runs[1]["already_present"] == n
    site_map = json.loads((tmp_path / "shared.pseudonyms.json").read_text())
    pseudonym = site_map["patients"][pid]["pseudonym"]
    assert {s["patient_id"] for s in runs[0]["studies"]} == {pseudonym}
    assert len(list(out.rglob("*.dcm"))) == n and not list(out.rglob("*.json"))
    assert not find_strings(out, ids[pid] + [pid, pacs.find_studies()[0].study_uid])
    assert not find_strings(tmp_path / "shared.pseudonyms.json", ids[pid])  # the map holds ids, never names
