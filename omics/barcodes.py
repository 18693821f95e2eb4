"""TCGA barcodes: patient id (first 12 characters) and sample type (characters 14-15)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fusion.errors import OmicsFormatError

# TCGA-<TSS>-<participant>[-<sample type><vial>[-<portion><analyte>-<plate>-<center>]]
_BARCODE = re.compile(
    r"^(?P<project>TCGA)-(?P<tss>[A-Z0-9]{2})-(?P<participant>[A-Z0-9]{4})"
    r"(?:-(?P<sample>\d{2})(?P<vial>[A-Z])?(?:-[A-Z0-9-]*)?)?$"
)


@dataclass(frozen=True)
class Barcode:
    """The parts of a TCGA sample/aliquot barcode (sample type codes: 01-09 tumour, 10-19 normal, 20-29 control)."""

    barcode: str
    project: str
    tss: str
    participant: str
    patient_id: str
    sample_type_code: int
    vial: str
    is_tumour: bool
    is_normal: bool


def _match(barcode: object) -> re.Match[str]:
    if not isinstance(barcode, str):
        raise OmicsFormatError(f"TCGA barcode must be a string, got {barcode!r} ({type(barcode).__name__})")
    match = _BARCODE.match(barcode.strip().upper())
    if match is None:
        raise OmicsFormatError(
            f"malformed TCGA barcode {barcode!r}: expected 'TCGA-XX-XXXX' optionally followed by '-NN[V]...'"
        )
    return match


def parse_barcode(barcode: str) -> Barcode:
    """Split a TCGA sample or aliquot barcode (at least 'TCGA-XX-XXXX-NN') into its parts."""
    match = _match(barcode)
    if match.group("sample") is None:
        raise OmicsFormatError(
            f"TCGA barcode {barcode!r} has no sample type: expected at least 'TCGA-XX-XXXX-NN' (15 characters)"
        )
    code = int(match.group("sample"))
    return Barcode(
        barcode=barcode.strip().upper(),
        project=match.group("project"),
        tss=match.group("tss"),
        participant=match.group("participant"),
        patient_id=barcode.strip().upper()[:12],
        sample_type_code=code,
        vial=match.group("vial") or "",
        is_tumour=1 <= code <= 9,
        is_normal=10 <= code <= 19,
    )


def patient_id(barcode: str) -> str:
    """The 12-character patient id ('TCGA-XX-XXXX') of any TCGA barcode, patient-level ones included."""
    _match(barcode)
    return barcode.strip().upper()[:12]
