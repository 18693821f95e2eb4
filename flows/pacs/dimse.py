"""A DIMSE PACS: C-FIND (study root) to find studies, series and instances; C-GET to retrieve them over
the same association (pynetdicom), so no storage port of ours has to be reachable from the PACS."""

from __future__ import annotations

from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RTStructureSetStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from flows.pacs.layout import StudyRef, with_retries
from fusion.errors import PacsError

# the storage classes a C-GET may send back (each needs an SCP role on our side)
STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage, PositronEmissionTomographyImageStorage,
                   EnhancedPETImageStorage, MRImageStorage, EnhancedMRImageStorage, RTStructureSetStorage,
                   SegmentationStorage, SecondaryCaptureImageStorage)
_OK, _PENDING = 0x0000, (0xFF00, 0xFF01)


class _AssociationFailed(ConnectionError):
    """The PACS did not accept an association (down, wrong port or AE title)."""


class DimsePacs:
    """One DICOM node (host, port, its AE title) queried as `calling_aet`."""

    def __init__(self, host: str, port: int, called_aet: str = "ORTHANC", calling_aet: str = "FUSIONRX",
                 timeout_s: float = 30.0, attempts: int = 4, backoff_s: float = 0.5) -> None:
        self.host, self.port, self.called_aet, self.calling_aet = host, int(port), called_aet, calling_aet
        self.timeout_s, self.attempts, self.backoff_s = timeout_s, attempts, backoff_s

    def __str__(self) -> str:
        return f"DIMSE {self.called_aet}@{self.host}:{self.port}"

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop in STORAGE_CLASSES:
            ae.add_requested_context(sop)
        return ae

    def _associate(self, ae: AE, handlers: list | None = None):
        roles = [build_role(sop, scp_role=True) for sop in STORAGE_CLASSES]
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, ext_neg=roles, evt_handlers=handlers or [])
        if not assoc.is_established:
            raise _AssociationFailed(f"association to {self} rejected or not answered")
        return assoc

    def _with_assoc(self, what: str, work, handlers: list | None = None):
        def once():
            assoc = self._associate(self._ae(), handlers)
            try:
                return work(assoc)
            finally:
                assoc.release()
        try:
            return with_retries(once, lambda e: isinstance(e, (ConnectionError, OSError)), self.attempts, self.backoff_s)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise PacsError(f"{self}: {what}: {exc}") from exc

    def _find(self, what: str, query: Dataset) -> list[Dataset]:
        def work(assoc):
            out = []
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status is None:
                    raise ConnectionError("no answer to C-FIND (connection lost)")
                if status.Status in _PENDING and identifier is not None:
                    out.append(identifier)
                elif status.Status != _OK:
                    raise RuntimeError(f"C-FIND failed with status 0x{status.Status:04X}")
            return out
        return self._with_assoc(what, work)

    def find_studies(self, patient_id: str | None = None, study_uid: str | None = None) -> list[StudyRef]:
        """Studies on the node (C-FIND at STUDY level), optionally of one patient and/or one study."""
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = patient_id or ""
        q.StudyInstanceUID = study_uid or ""
        q.StudyDescription = ""
        return [StudyRef(str(i.get("PatientID", "")), str(i.StudyInstanceUID), str(i.get("StudyDescription", "")))
                for i in self._find("C-FIND studies", q)]

    def series_of(self, study_uid: str) -> list[str]:
        """Series instance UIDs of one study (C-FIND at SERIES level)."""
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, ""
        return [str(i.SeriesInstanceUID) for i in self._find(f"C-FIND series of study {study_uid}", q)]

    def instances_of(self, study_uid: str, series_uid: str) -> list[str]:
        """SOP instance UIDs of one series (C-FIND at IMAGE level)."""
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, series_uid, ""
        return [str(i.SOPInstanceUID) for i in self._find(f"C-FIND instances of series {series_uid}", q)]

    def retrieve(self, study_uid: str, series_uid: str, sop_uids: list[str] | None) -> list[Dataset]:
        """Instances of one series by C-GET (the whole series when `sop_uids` is None, else those)."""
        received: list[Dataset] = []

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        q = Dataset()
        q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, series_uid
        if sop_uids is None:
            q.QueryRetrieveLevel = "SERIES"
        else:
            q.QueryRetrieveLevel = "IMAGE"
            q.SOPInstanceUID = list(sop_uids)

        def work(assoc):
            received.clear()
            for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
                if status is None:
                    raise ConnectionError("no answer to C-GET (connection lost)")
                if status.Status not in _PENDING and status.Status != _OK:
                    failed = getattr(status, "NumberOfFailedSuboperations", "?")
                    raise RuntimeError(f"C-GET failed with status 0x{status.Status:04X} ({failed} failed sub-operations)")
            return list(received)
        return self._with_assoc(f"C-GET series {series_uid}", work, [(evt.EVT_C_STORE, on_store)])
