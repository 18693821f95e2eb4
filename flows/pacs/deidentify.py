"""De-identified copies of DICOM instances for sites that must share (DICOM PS3.15 Annex E).

The Basic Application Level Confidentiality Profile with the options

- Retain Patient Characteristics: sex, age, size, weight, ethnic group, smoking and pregnancy status stay
  (SUV needs the weight; SUVlbm/SUVbsa the size and sex);
- Retain Longitudinal Temporal Information with Modified Dates: every date (DA) and date-time (DT) of a patient
  moves by the same whole number of days (one offset per patient, kept by the site), times of day stay, so
  every interval (injection to scan: SUV decay) is exactly what it was;
- Retain Safe Private: of the private attributes only the Philips PET SUV and activity-concentration scale
  factors (7053,xx00) and (7053,xx09) stay (PS3.15 Table E.3.10-1; SUV from Philips counts needs them);

and: the PatientID (and PatientName) replaced by a pseudonym, every instance-specific UID (study, series, SOP
instance, frame of reference, and every reference to them, in sequences too: RTSTRUCT and SEG references stay
resolvable) replaced by a UUID-derived UID (2.25.<128-bit HMAC of the UID>), the same input UID giving the same
output UID in every instance, study and later pull. Names of people (every PN) are emptied, addresses,
telephone numbers, institutions, accession numbers, free-text descriptions, comments and the request /
visit / procedure-step groups are removed, the birth date is emptied. Pixel data are not touched (burned-in
text, ``BurnedInAnnotation`` YES, is the site's to check).

The site keeps the pseudonym map (``PseudonymMap``: a JSON file holding the secret key, and per patient the
pseudonym and the date offset): it never travels with the copies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from flows.store.atomic import atomic_path

PROFILE = "DICOM PS3.15 E.1 Basic Profile; Retain Patient Characteristics; Retain Longitudinal Temporal " \
          "Information with Modified Dates; Retain Safe Private (Philips PET SUV factors)"
_METHOD = "PS3.15 Basic; RtnPatChars; RtnLongModifDates; RtnSafePriv"  # LO: <= 64 characters
_METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                 ("113108", "Retain Patient Characteristics Option"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                 ("113111", "Retain Safe Private Option"))
# Patient module (group 0010): only these stay (pseudonymised or as characteristics); the rest is removed.
_PATIENT_KEEP = {"PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize",
                 "PatientWeight", "EthnicGroup", "SmokingStatus", "PregnancyStatus", "PatientSexNeutered",
                 "PatientSpeciesDescription", "PatientSpeciesCodeSequence", "QualityControlSubject"}
_EMPTY = {"PatientBirthDate", "AccessionNumber", "StudyID", "ContentCreatorName", "StructureSetName",
          "ReferringPhysicianName"}
_REMOVE = {
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
    "InstitutionalDepartmentTypeCodeSequence", "StationName", "DeviceSerialNumber", "DetectorID", "GantryID",
    "PlateID", "CassetteID", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorIdentificationSequence", "StudyDescription",
    "SeriesDescription", "ImageComments", "FrameComments", "AcquisitionComments", "DerivationDescription",
    "ProtocolName", "PerformedProcedureStepID", "PerformedProcedureStepDescription", "RequestAttributesSequence",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "RequestedProcedureID", "RequestedProcedureDescription", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID", "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "StructureSetDescription", "PersonAddress", "PersonTelephoneNumbers", "PersonIdentificationCodeSequence",
    "ResponsibleOrganization", "TextString", "ContentSequence", "OverlayComments", "IssuerOfPatientID",
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
    "ModifiedAttributesSequence", "OriginalAttributesSequence", "DigitalSignaturesSequence",
}
_REMOVE_GROUPS = {0x0032, 0x0038, 0x4008}  # study request, visit / admission, results: all identifying
_KEEP_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
              "ImplementationClassUID", "CodingSchemeUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID",
              "PrivateInformationCreatorUID"}
_SAFE_PRIVATE = {(0x7053, "Philips PET Private Group"): {0x00, 0x09}}  # SUV / activity scale factors
_SHIFT_RANGE_DAYS = (366, 3650)  # each patient's dates move back by 1 to 10 years


def _atomic_json(path: Path, obj: Any) -> None:
    """Write JSON readable by the owner only (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.chmod(path, 0o600)  # atomic_path leaves the umask's permissions


@dataclass
class PseudonymMap:
    """The site's secret: the HMAC key behind every UID and pseudonym, and per original PatientID its
    pseudonym and date offset (days). Load it with ``PseudonymMap.load(path)`` (created on first use)."""

    path: Path
    key: bytes
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PseudonymMap:
        """Read the map (a new one, with a fresh random key, when the file does not exist yet)."""
        path = Path(path)
        if not path.exists():
            return cls(path, secrets.token_bytes(32))
        try:
            raw = json.loads(path.read_text())
            return cls(path, bytes.fromhex(raw["key"]), dict(raw["patients"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a FusionRx pseudonym map ({type(exc).__name__}: {exc})") from exc

    def save(self) -> Path:
        """Write the map (owner-only permissions): keep it at the site, never with the copies."""
        _atomic_json(self.path, {"key": self.key.hex(), "profile": PROFILE, "patients": self.patients})
        return self.path

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self.key, "|".join(parts).encode(), hashlib.sha256).digest()

    def patient(self, patient_id: str) -> dict[str, Any]:
        """The pseudonym and date offset of one original PatientID (assigned on first sight, then kept)."""
        if patient_id not in self.patients:
            mac = self._mac("patient", patient_id)
            lo, hi = _SHIFT_RANGE_DAYS
            self.patients[patient_id] = {"pseudonym": f"FRX-{mac[:5].hex().upper()}",
                                         "date_shift_days": -(lo + int.from_bytes(mac[5:9], "big") % (hi - lo))}
        return self.patients[patient_id]

    def uid(self, uid: str) -> str:
        """The replacement of an instance UID: 2.25.<decimal of 128 HMAC bits> (same input, same output)."""
        return f"2.25.{int.from_bytes(self._mac('uid', str(uid).strip())[:16], 'big')}"


def _shift_date(text: str, days: int) -> str:
    """A DA value (YYYYMMDD, old YYYY.MM.DD, or a range A-B) moved by `days`; '' when it is no date."""
    if "-" in text:
        return "-".join(_shift_date(part, days) if part else "" for part in text.split("-"))
    try:
        day = dt.datetime.strptime(text.strip().replace(".", ""), "%Y%m%d")
    except ValueError:
        return ""
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def _shift_datetime(text: str, days: int) -> str:
    """A DT value moved by `days`: its date part shifted, time of day, fraction and UTC offset kept; a value
    of year or month precision keeps that precision; '' when it cannot be read."""
    text = text.strip()
    if len(text) >= 8:
        shifted = _shift_date(text[:8], days)
        return shifted + text[8:] if shifted else ""
    if len(text) in (4, 6) and text.isdigit():  # YYYY or YYYYMM: shift its first day, keep the precision
        return _shift_date(text + "0101"[len(text) - 4:], days)[:len(text)]
    return ""


def _multi(value: Any, fn) -> Any:
    """Apply fn to a single or multi-valued string value (None and empty values stay)."""
    if value is None or value == "":
        return value
    if isinstance(value, (str, bytes)):
        return fn(value.decode("ascii", "replace") if isinstance(value, bytes) else str(value))
    return [fn(str(v)) for v in value]


def _is_registered(uid: str) -> bool:
    """A UID of the standard (SOP classes, transfer syntaxes, coding schemes): never replaced."""
    return UID(uid).name != uid


def _safe_private(ds: Dataset, elem: DataElement) -> bool:
    """Whether a private element is one of the retained safe ones (or the creator of their block)."""
    group, element = elem.tag.group, elem.tag.element
    for (g, creator), offsets in _SAFE_PRIVATE.items():
        if group != g:
            continue
        if 0x10 <= element <= 0xFF:  # a private creator element
            if str(elem.value).strip() == creator:
                return True
            continue
        block_creator = ds.get((group, element >> 8))
        if block_creator is not None and str(block_creator.value).strip() == creator and element & 0xFF in offsets:
            return True
    return False


class Deidentifier:
    """Applies the profile to datasets in place; one per pull or folder, sharing one ``PseudonymMap``."""

    def __init__(self, pseudonyms: PseudonymMap) -> None:
        self.pseudonyms = pseudonyms

    def uid(self, uid: str) -> str:
        """The output UID of an input instance / series / study UID."""
        return uid if _is_registered(uid) else self.pseudonyms.uid(uid)

    def __call__(self, ds: Dataset) -> Dataset:
        """De-identify `ds` in place (file meta too) and return it."""
        patient = self.pseudonyms.patient(str(ds.get("PatientID", "") or ""))
        days = int(patient["date_shift_days"])
        ds.walk(lambda d, e: self._element(d, e, patient["pseudonym"], days))
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(str(meta.MediaStorageSOPInstanceUID))
            meta.pop("SourceApplicationEntityTitle", None)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = _METHOD
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        return ds

    def _element(self, ds: Dataset, elem: DataElement, pseudonym: str, days: int) -> None:
        """The profile's action on one element (remove, empty, pseudonymise, remap, shift or keep)."""
        tag, keyword, vr = elem.tag, elem.keyword, elem.VR
        if tag.is_private:
            if not _safe_private(ds, elem):
                del ds[tag]
            return
        if (not keyword or keyword in _REMOVE or tag.group in _REMOVE_GROUPS  # not keyword: unknown attributes
                or (tag.group & 0xFF00) == 0x5000 or (tag.group == 0x0010 and keyword not in _PATIENT_KEEP)):
            del ds[tag]
        elif keyword in ("PatientID", "PatientName"):
            elem.value = pseudonym
        elif keyword in _EMPTY or vr == "PN":
            elem.value = ""
        elif vr == "UI" and keyword not in _KEEP_UIDS:
            elem.value = _multi(elem.value, self.uid)
        elif vr == "DA":
            elem.value = _multi(elem.value, lambda v: _shift_date(v, days))
        elif vr == "DT":
            elem.value = _multi(elem.value, lambda v: _shift_datetime(v, days))


def check_map_outside(pseudonyms: PseudonymMap, out_dir: str | os.PathLike) -> None:
    """ValueError when the pseudonym map would sit inside the folder of shared copies."""
    out, path = Path(out_dir).resolve(), pseudonyms.path.resolve()
    if out == path.parent or out in path.parents:
        raise ValueError(f"{pseudonyms.path}: the pseudonym map must stay at the site, outside {out_dir} (the "
                         f"folder of de-identified copies that is shared)")


def deidentify_folder(src: str | os.PathLike, dst: str | os.PathLike, pseudonyms: PseudonymMap) -> dict[str, Any]:
    """Write a de-identified copy of every DICOM file under `src` into `dst`, laid out as a pull
    (``dst/<study>/<series>/<sop>.dcm``, all UIDs replaced); other files are skipped, a file that cannot be read
    is named in ``failed`` and the others go on. The map is saved (new patients) at the end."""
    from flows.pacs.layout import write_instance
    from fusion.errors import DicomSeriesError
    from imaging.dicom_frames import read_image

    check_map_outside(pseudonyms, dst)
    pseudonyms.save()  # the key before any copy is written (pseudonyms and offsets derive from it)
    deid = Deidentifier(pseudonyms)
    written, failed = 0, []
    for path in sorted(p for p in Path(src).rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = read_image(path, fast=False)
        except DicomSeriesError as exc:
            failed.append({"file": str(path), "error": str(exc)})
            continue
        if ds is not None:
            write_instance(Path(dst), deid(ds))
            written += 1
    pseudonyms.save()
    return {"written": written, "failed": failed, "pseudonym_map": str(pseudonyms.path)}
