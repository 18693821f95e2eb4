"""A DICOMweb PACS: QIDO-RS to find studies, series and instances; WADO-RS to retrieve them
(dicomweb-client). Credentials come from the environment, never from a catalog file."""

from __future__ import annotations

import os

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from flows.pacs.layout import StudyRef, with_retries
from fusion.errors import PacsError

ENV_TOKEN = "FUSIONRX_DICOMWEB_TOKEN"        # bearer token
ENV_USER = "FUSIONRX_DICOMWEB_USER"          # HTTP basic auth user ...
ENV_PASSWORD = "FUSIONRX_DICOMWEB_PASSWORD"  # ... and password


def session_from_env() -> requests.Session:
    """A requests session with the auth the environment gives (bearer token, or basic user/password)."""
    session = requests.Session()
    if os.environ.get(ENV_TOKEN):
        session.headers["Authorization"] = f"Bearer {os.environ[ENV_TOKEN]}"
    elif os.environ.get(ENV_USER):
        session.auth = (os.environ[ENV_USER], os.environ.get(ENV_PASSWORD, ""))
    return session


def is_retryable(exc: BaseException) -> bool:
    """Network failures, timeouts and 5xx / 429 answers are worth another try; 4xx answers are not."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return False


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class DicomWebPacs:
    """One DICOMweb endpoint (base URL of its QIDO/WADO services, e.g. http://host:8042/dicom-web)."""

    def __init__(self, url: str, timeout_s: float = 30.0, attempts: int = 4, backoff_s: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.attempts, self.backoff_s = attempts, backoff_s
        self.client = DICOMwebClient(self.url, session=session_from_env(), timeout=timeout_s)
        # dicomweb-client's own retrying waits up to 30 s per call on any exception; ours is bounded and
        # retries 5xx/429 and network errors only
        self.client.set_http_retry_params(retry=False)

    def __str__(self) -> str:
        return f"DICOMweb {self.url}"

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return with_retries(lambda: fn(*args, **kwargs), is_retryable, self.attempts, self.backoff_s)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = " (credentials: set FUSIONRX_DICOMWEB_USER/PASSWORD or FUSIONRX_DICOMWEB_TOKEN)" if code in (401, 403) else ""
            raise PacsError(f"{self}: {what}: HTTP {code}{hint}") from exc
        except requests.RequestException as exc:
            raise PacsError(f"{self}: {what}: {type(exc).__name__} after {self.attempts} attempts: {exc}") from exc

    def find_studies(self, patient_id: str | None = None, study_uid: str | None = None) -> list[StudyRef]:
        """Studies on the PACS (QIDO-RS), optionally of one patient and/or one study UID."""
        filters = {k: v for k, v in {"PatientID": patient_id, "StudyInstanceUID": study_uid}.items() if v}
        items = self._call("QIDO-RS study search", self.client.search_for_studies, search_filters=filters,
                           fields=["PatientID", "StudyDescription"], get_remaining=True)
        return [StudyRef(_value(i, "00100020"), _value(i, "0020000D"), _value(i, "00081030")) for i in items]

    def series_of(self, study_uid: str) -> list[str]:
        """Series instance UIDs of one study (QIDO-RS)."""
        items = self._call(f"QIDO-RS series of study {study_uid}", self.client.search_for_series,
                           study_instance_uid=study_uid, get_remaining=True)
        return [_value(i, "0020000E") for i in items]

    def instances_of(self, study_uid: str, series_uid: str) -> list[str]:
        """SOP instance UIDs of one series (QIDO-RS)."""
        items = self._call(f"QIDO-RS instances of series {series_uid}", self.client.search_for_instances,
                           study_instance_uid=study_uid, series_instance_uid=series_uid, get_remaining=True)
        return [_value(i, "00080018") for i in items]

    def retrieve(self, study_uid: str, series_uid: str, sop_uids: list[str] | None) -> list[Dataset]:
        """Instances of one series (WADO-RS): the whole series when `sop_uids` is None, else those."""
        if sop_uids is None:
            return self._call(f"WADO-RS series {series_uid}", self.client.retrieve_series, study_uid, series_uid)
        return [self._call(f"WADO-RS instance {sop}", self.client.retrieve_instance, study_uid, series_uid, sop)
                for sop in sop_uids]
