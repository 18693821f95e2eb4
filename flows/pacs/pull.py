"""Pull studies from a PACS into a folder: each SOP instance once (an instance already in the folder is
never pulled again), a study that cannot be pulled named with its error while the others go on. With a
``Deidentifier`` (``fusionrx pull --deidentify``) only de-identified copies are written (pseudonym, replaced
UIDs, shifted dates: ``flows.pacs.deidentify``) and the report names studies by pseudonym and replaced UID."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydicom import Dataset

from flows.pacs.deidentify import Deidentifier, check_map_outside
from flows.pacs.layout import PullReport, StudyRef, StudyResult, pulled_sop_uids, write_instance
from fusion.errors import PacsError


class Pacs(Protocol):
    """What a pull needs of a PACS (DICOMweb and DIMSE both provide it)."""

    def find_studies(self, patient_id: str | None = None, study_uid: str | None = None) -> list[StudyRef]: ...
    def series_of(self, study_uid: str) -> list[str]: ...
    def instances_of(self, study_uid: str, series_uid: str) -> list[str]: ...
    def retrieve(self, study_uid: str, series_uid: str, sop_uids: list[str] | None) -> list[Dataset]: ...


def _study_result(study: StudyRef, deid: Deidentifier | None, error: str | None = None) -> StudyResult:
    """A study's result line, by pseudonym and replaced study UID when de-identifying."""
    if deid is None:
        return StudyResult(study.patient_id, study.study_uid, error=error)
    return StudyResult(deid.pseudonyms.patient(study.patient_id)["pseudonym"], deid.uid(study.study_uid),
                       error=error)


def _pull_study(pacs: Pacs, study: StudyRef, out_dir: Path, report: PullReport,
                deid: Deidentifier | None = None) -> StudyResult:
    """Pull what the folder lacks of one study (the folder holds replaced UIDs when de-identifying)."""
    key = deid.uid if deid is not None else str
    res = _study_result(study, deid)
    present = pulled_sop_uids(out_dir, key(study.study_uid))
    for series_uid in pacs.series_of(study.study_uid):
        sops = pacs.instances_of(study.study_uid, series_uid)
        missing = [s for s in sops if key(s) not in present]
        res.n_instances += len(sops)
        res.already_present += len(sops) - len(missing)
        if not missing:
            continue
        datasets = pacs.retrieve(study.study_uid, series_uid, None if len(missing) == len(sops) else missing)
        for ds in datasets:
            if key(str(ds.SOPInstanceUID)) in present:
                continue
            if deid is not None:
                ds = deid(ds)
            report.bytes_written += write_instance(out_dir, ds)
            present.add(str(ds.SOPInstanceUID))
            res.pulled += 1
        short = {s for s in missing if key(s) not in present}
        if short:
            raise PacsError(f"{pacs}: series {key(series_uid)}: {len(short)} of {len(sops)} instances were not "
                            f"sent")
    return res


def pull(pacs: Pacs, out_dir: str | Path, patient_id: str | None = None, study_uid: str | None = None,
         on_study_done: Callable[[StudyResult], None] | None = None,
         deidentifier: Deidentifier | None = None) -> PullReport:
    """Find the studies (optionally of one patient / one study) and pull what the folder lacks; with a
    ``deidentifier``, write de-identified copies only and save its pseudonym map after each study.

    Raises PacsError when the PACS cannot even be searched; a study that fails later is recorded in the
    report (``report.failed``) and the pull goes on with the next one.
    """
    out_dir = Path(out_dir)
    if deidentifier is not None:
        check_map_outside(deidentifier.pseudonyms, out_dir)
        deidentifier.pseudonyms.save()  # the key first: a pull cut short still left files made with a kept key
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = PullReport(source=str(pacs), out_dir=str(out_dir))
    studies = pacs.find_studies(patient_id, study_uid)
    if not studies:
        raise PacsError(f"{pacs}: no study matches patient {patient_id or '*'} / study {study_uid or '*'}")
    for study in studies:
        try:
            res = _pull_study(pacs, study, out_dir, report, deidentifier)
        except PacsError as exc:
            res = _study_result(study, deidentifier, error=str(exc))
        if deidentifier is not None:
            deidentifier.pseudonyms.save()
        report.studies.append(res)
        if on_study_done is not None:
            on_study_done(res)
    report.wall_s = time.perf_counter() - t0
    return report


def pull_dicomweb(url: str, out_dir: str | Path, patient_id: str | None = None, study_uid: str | None = None,
                  **kwargs) -> PullReport:
    """Pull from a DICOMweb endpoint (QIDO-RS + WADO-RS); auth from the environment."""
    from flows.pacs.dicomweb import DicomWebPacs

    on_done, deid = kwargs.pop("on_study_done", None), kwargs.pop("deidentifier", None)
    return pull(DicomWebPacs(url, **kwargs), out_dir, patient_id, study_uid, on_done, deid)


def pull_dimse(host: str, port: int, out_dir: str | Path, called_aet: str = "ORTHANC", calling_aet: str = "FUSIONRX",
               patient_id: str | None = None, study_uid: str | None = None, **kwargs) -> PullReport:
    """Pull from a DICOM node by C-FIND + C-GET."""
    from flows.pacs.dimse import DimsePacs

    on_done, deid = kwargs.pop("on_study_done", None), kwargs.pop("deidentifier", None)
    return pull(DimsePacs(host, port, called_aet, calling_aet, **kwargs), out_dir, patient_id, study_uid, on_done,
                deid)
