import pytest

from fusion.errors import OmicsFormatError
from omics.barcodes import parse_barcode, patient_id


def test_parse_aliquot_barcode():
    b = parse_barcode("TCGA-02-0001-01C-01D-0182-01")
    assert b.project == "TCGA"
    assert b.tss == "02"
    assert b.participant == "0001"
    assert b.patient_id == "TCGA-02-0001"
    assert b.sample_type_code == 1
    assert b.vial == "C"
    assert b.is_tumour and not b.is_normal


@pytest.mark.parametrize(
    "barcode, code, tumour, normal",
    [
        ("TCGA-FX-0001-11A", 11, False, True),
        ("TCGA-FX-0001-10A-01D-A000-08", 10, False, True),
        ("TCGA-FX-0001-06", 6, True, False),
        ("TCGA-FX-0001-20A", 20, False, False),
    ],
)
def test_sample_type_codes(barcode, code, tumour, normal):
    b = parse_barcode(barcode)
    assert (b.sample_type_code, b.is_tumour, b.is_normal) == (code, tumour, normal)


def test_patient_id_accepts_patient_level_barcodes():
    assert patient_id("TCGA-FX-0001") == "TCGA-FX-0001"
    assert patient_id("TCGA-FX-0001-01A-11R-A000-07") == "TCGA-FX-0001"


@pytest.mark.parametrize("bad", ["TCGA-FX-01", "XXXX-FX-0001-01A", "TCGA_FX_0001_01A", "", "TCGA-FX-0001-1A"])
def test_malformed_barcode_names_the_value(bad):
    with pytest.raises(OmicsFormatError, match="TCGA"):
        parse_barcode(bad)
    with pytest.raises(OmicsFormatError) as info:
        parse_barcode(bad)
    assert repr(bad) in str(info.value)


def test_sample_type_required_for_parse():
    with pytest.raises(OmicsFormatError, match="no sample type"):
        parse_barcode("TCGA-FX-0001")
    with pytest.raises(OmicsFormatError):
        patient_id(None)  # type: ignore[arg-type]
