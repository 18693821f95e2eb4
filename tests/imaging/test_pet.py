"""PET SUVbw: closed-form check of the decay-corrected dose, per-slice slopes, clear header errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from flows.synthetic.dicom_writer import write_pet_series
from fusion.errors import DicomSeriesError
from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv, suv_bw_scale, suv_scale, uptake_time_s

PID = "TCGA-FX-0007"
DOSE_BQ = 370e6
WEIGHT_KG = 70.0
UPTAKE_S = 3600.0
HALF_LIFE_S = 6586.2
CENTRE_MM = (38.0, 4.0, 6.0)
TUMOUR_SUV = 9.0


@pytest.fixture(scope="module")
def pet_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pet") / PID
    truth = write_pet_series(out, patient_id=PID, tumour_centre_mm=CENTRE_MM, tumour_radius_mm=15.0,
                             tumour_suv=TUMOUR_SUV, background_suv=1.0, weight_kg=WEIGHT_KG, dose_bq=DOSE_BQ,
                             half_life_s=HALF_LIFE_S, injection_to_scan_s=UPTAKE_S, seed=11)
    return out, truth


def test_suv_scale_matches_closed_form(pet_series: tuple[Path, dict]) -> None:
    directory, _ = pet_series
    # 370 MBq decays for 60 min with T1/2 = 6586.2 s: 370e6 * 2**(-3600/6586.2) = 253.3 MBq.
    decayed = DOSE_BQ * 2.0 ** (-UPTAKE_S / HALF_LIFE_S)
    assert decayed == pytest.approx(253.3e6, rel=1e-3)
    expected_scale = WEIGHT_KG * 1000.0 / decayed  # g/ml per Bq/ml
    ds = pydicom.dcmread(directory / "PT_0001.dcm", stop_before_pixels=True)
    assert suv_bw_scale(ds) == pytest.approx(expected_scale, rel=1e-6)


def test_planted_suv_recovered(pet_series: tuple[Path, dict]) -> None:
    directory, truth = pet_series
    activity = read_dicom_series(directory)
    assert activity.units == "BQML"
    suv = read_pet_suv(directory)
    assert suv.units == "SUVbw" and suv.shape == (20, 48, 48)
    assert suv.spacing_mm == pytest.approx((6.0, 4.0, 4.0))
    k, j, i = np.rint(suv.voxel_coords(np.array(CENTRE_MM))).astype(int)
    # Tumour activity in Bq/ml: SUV * decayed dose / weight_g.
    bq_per_ml = TUMOUR_SUV * DOSE_BQ * 2.0 ** (-UPTAKE_S / HALF_LIFE_S) / (WEIGHT_KG * 1000.0)
    assert bq_per_ml == pytest.approx(32570.0, rel=1e-3)
    assert activity.array[k, j, i] == pytest.approx(bq_per_ml, rel=5e-3)
    assert suv.array[k, j, i] == pytest.approx(TUMOUR_SUV, rel=5e-3)
    assert suv.array.max() == pytest.approx(TUMOUR_SUV, rel=5e-3)
    body = suv.array > 0.6
    soft = body & (suv.array < 2.0)
    assert np.median(suv.array[soft]) == pytest.approx(truth["background_suv"], rel=5e-3)
    lung = (suv.array > 0.1) & (suv.array < 0.6)
    assert np.median(suv.array[lung]) == pytest.approx(truth["lung_suv"], rel=5e-3)
    assert suv.meta["suv_bw_scale_g_per_ml"] == pytest.approx(WEIGHT_KG * 1000.0 / truth["decayed_dose_bq"], rel=1e-6)


def test_per_slice_slope_honoured(pet_series: tuple[Path, dict]) -> None:
    directory, truth = pet_series
    slopes = truth["rescale_slopes"]
    assert max(slopes) > 5 * min(slopes)  # tumour slices have much larger slopes than the others
    suv = read_pet_suv(directory)
    for path in sorted(directory.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber) - 1
        by_hand = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) * suv.meta["suv_bw_scale_g_per_ml"]
        assert np.allclose(suv.array[k], by_hand, rtol=1e-5, atol=1e-6)
    # Background slices (smaller slopes) still give SUV 1.0 in soft tissue, not a slice-max rescaled value.
    lowest = int(np.argmin(slopes))
    row = suv.array[lowest]
    assert np.median(row[(row > 0.6) & (row < 2.0)]) == pytest.approx(1.0, rel=5e-3)


def _edit(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    for path in sorted(dst.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    return dst


def test_missing_weight_raises(pet_series: tuple[Path, dict], tmp_path: Path) -> None:
    bad = _edit(pet_series[0], tmp_path / "noweight", lambda ds: delattr(ds, "PatientWeight"))
    with pytest.raises(DicomSeriesError, match=r"PT_0001\.dcm.*PatientWeight"):
        read_pet_suv(bad)


@pytest.mark.parametrize(
    ("tag", "edit"),
    [
        ("RadionuclideTotalDose", lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0],
                                                      "RadionuclideTotalDose")),
        ("RadionuclideHalfLife", lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0],
                                                     "RadionuclideHalfLife")),
        ("RadiopharmaceuticalStartTime", lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0],
                                                             "RadiopharmaceuticalStartTime")),
        ("SeriesTime", lambda ds: delattr(ds, "SeriesTime")),
        ("RadiopharmaceuticalInformationSequence",
         lambda ds: delattr(ds, "RadiopharmaceuticalInformationSequence")),
        ("Units", lambda ds: setattr(ds, "Units", "CNTS")),
        ("DecayCorrection", lambda ds: setattr(ds, "DecayCorrection", "NONE")),
    ],
)
def test_missing_or_wrong_suv_fields_raise(pet_series: tuple[Path, dict], tmp_path: Path, tag: str, edit) -> None:
    bad = _edit(pet_series[0], tmp_path / "bad", edit)
    with pytest.raises(DicomSeriesError, match=tag):
        read_pet_suv(bad)


def test_decay_midnight_rollover_and_admin(pet_series: tuple[Path, dict]) -> None:
    ds = pydicom.dcmread(pet_series[0] / "PT_0001.dcm", stop_before_pixels=True)
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "233000"
    ds.SeriesTime = "003000"  # one hour later, after midnight
    decayed = DOSE_BQ * 2.0 ** (-3600.0 / HALF_LIFE_S)
    assert suv_bw_scale(ds) == pytest.approx(WEIGHT_KG * 1000.0 / decayed, rel=1e-9)
    ds.DecayCorrection = "ADMIN"  # already decay-corrected to injection: no further decay
    assert suv_bw_scale(ds) == pytest.approx(WEIGHT_KG * 1000.0 / DOSE_BQ, rel=1e-9)


def test_ct_series_is_not_pet(tmp_path: Path) -> None:
    from flows.synthetic.dicom_writer import write_ct_series

    write_ct_series(tmp_path / "ct", patient_id=PID, tumour_centre_mm=CENTRE_MM, tumour_radius_mm=8.0, seed=1,
                    shape=(6, 32, 32))
    with pytest.raises(DicomSeriesError, match="expected PT"):
        read_pet_suv(tmp_path / "ct")


def _decayed(uptake_s: float = UPTAKE_S) -> float:
    return DOSE_BQ * 2.0 ** (-uptake_s / HALF_LIFE_S)


def _header(pet_series: tuple[Path, dict]) -> pydicom.Dataset:
    return pydicom.dcmread(pet_series[0] / "PT_0001.dcm", stop_before_pixels=True)


def test_admin_decay_correction_series(pet_series: tuple[Path, dict], tmp_path: Path) -> None:
    # ADMIN: activity already decay-corrected to injection, so SUV = value * weight / full dose.
    admin = _edit(pet_series[0], tmp_path / "admin", lambda ds: setattr(ds, "DecayCorrection", "ADMIN"))
    activity = read_dicom_series(admin)
    suv = read_pet_suv(admin)
    assert suv.meta["suv_scale"] == pytest.approx(WEIGHT_KG * 1000.0 / DOSE_BQ, rel=1e-12)
    assert np.allclose(suv.array, activity.array * (WEIGHT_KG * 1000.0 / DOSE_BQ), rtol=1e-6)
    assert suv.array.max() == pytest.approx(TUMOUR_SUV * _decayed() / DOSE_BQ, rel=5e-3)  # 9 * 0.685 = 6.16


def _philips(element: int, value: str):
    def edit(ds: pydicom.Dataset) -> None:
        ds.Units = "CNTS"
        ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(element, "DS", value)
    return edit


def test_philips_cnts_suv_scale_factor(pet_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Philips CNTS: SUVbw = (stored * slope + intercept) * SUV Scale Factor (7053,1000), nothing else used.
    factor = 0.000276  # g/ml per count, as a Philips console writes it
    cnts = _edit(pet_series[0], tmp_path / "cnts", _philips(0x00, f"{factor}"))
    assert pydicom.dcmread(cnts / "PT_0002.dcm")[0x7053, 0x1000].value == pytest.approx(factor)
    counts = read_dicom_series(cnts)
    suv = read_pet_suv(cnts)
    assert counts.units == "CNTS" and suv.units == "SUVbw" and suv.meta["suv_scale"] == factor
    ds = pydicom.dcmread(cnts / "PT_0007.dcm")
    k = int(ds.InstanceNumber) - 1
    by_hand = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)) * factor
    assert np.allclose(suv.array[k], by_hand, rtol=1e-5, atol=1e-7)


def test_philips_cnts_activity_factor_then_bqml_rule(pet_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Only (7053,1009): counts * 2.5 = Bq/ml, then weight / decayed dose.
    cnts = _edit(pet_series[0], tmp_path / "cnts", _philips(0x09, "2.5"))
    suv = read_pet_suv(cnts)
    assert suv.meta["suv_scale"] == pytest.approx(2.5 * WEIGHT_KG * 1000.0 / _decayed(), rel=1e-9)
    assert suv.array.max() == pytest.approx(2.5 * TUMOUR_SUV, rel=5e-3)
    missing = _edit(pet_series[0], tmp_path / "nophilips", lambda ds: setattr(ds, "Units", "CNTS"))
    with pytest.raises(DicomSeriesError, match=r"PT_0001\.dcm.*Units is CNTS.*\(7053,1000\)"):
        read_pet_suv(missing)


def test_injection_date_time_across_midnight(pet_series: tuple[Path, dict]) -> None:
    ds = _header(pet_series)
    info = ds.RadiopharmaceuticalInformationSequence[0]
    info.RadiopharmaceuticalStartDateTime = "20231231233000.00"
    ds.SeriesDate = ds.AcquisitionDate = "20240101"
    ds.SeriesTime = ds.AcquisitionTime = "003000"
    assert uptake_time_s(ds) == pytest.approx(3600.0)
    assert suv_bw_scale(ds) == pytest.approx(WEIGHT_KG * 1000.0 / _decayed(3600.0), rel=1e-12)
    del info.RadiopharmaceuticalStartDateTime  # time only: injected the evening before
    info.RadiopharmaceuticalStartTime = "224500"
    assert uptake_time_s(ds) == pytest.approx(6300.0)


def test_scan_start_is_earliest_acquisition_when_series_time_later(pet_series: tuple[Path, dict]) -> None:
    # A console re-saved the series at 12:00 (SeriesTime) but the beds were acquired from 11:00 and 11:04.
    ds1, ds2 = _header(pet_series), _header(pet_series)
    for ds, acq in ((ds1, "110000"), (ds2, "110400")):
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "100000"
        ds.SeriesTime, ds.AcquisitionTime = "120000", acq
    assert uptake_time_s([ds2, ds1]) == pytest.approx(3600.0)
    # Series time earlier than every acquisition (Siemens: per-bed acquisition times): the series time counts.
    for ds in (ds1, ds2):
        ds.SeriesTime = "105500"
    assert uptake_time_s([ds1, ds2]) == pytest.approx(3300.0)


def test_suv_lbm_and_bsa_by_hand(pet_series: tuple[Path, dict]) -> None:
    ds = _header(pet_series)
    ds.PatientSize, ds.PatientSex = "1.75", "M"
    bw = WEIGHT_KG * 1000.0 / _decayed()
    # James (1976), male: 1.10 W - 128 (W / H_cm)^2 = 77 - 128 * 0.16 = 56.52 kg.
    scale, info = suv_scale(ds, "lbm", lbm_formula="james")
    assert info["lbm_kg"] == pytest.approx(56.52) and scale == pytest.approx(bw * 56.52 / 70.0)
    # Janmahasatian (2005), male: 9270 W / (6680 + 216 BMI), BMI = 70 / 1.75^2 = 22.857: 55.858 kg.
    scale, info = suv_scale(ds, "lbm")
    assert info["lbm_kg"] == pytest.approx(9270 * 70 / (6680 + 216 * 70 / 1.75 ** 2))
    assert info["lbm_kg"] == pytest.approx(55.858, abs=1e-3)
    ds.PatientSex = "F"  # 9270 W / (8780 + 244 BMI) = 648900 / 14357.1 = 45.197 kg
    assert suv_scale(ds, "lbm")[1]["lbm_kg"] == pytest.approx(45.197, abs=1e-3)
    # Du Bois BSA: 0.007184 * 70^0.425 * 175^0.725 = 1.848 m^2; SUVbsa = SUVbw * BSA_cm2 / weight_g.
    scale, info = suv_scale(ds, "bsa")
    assert info["bsa_m2"] == pytest.approx(1.848, abs=1e-3)
    assert scale == pytest.approx(bw * info["bsa_m2"] * 1e4 / 70000.0)
    ds.PatientSize = "175"  # centimetres where metres are due: read as cm and reported
    assert suv_scale(ds, "bsa")[1]["patient_size_read_as_cm"] is True


@pytest.mark.parametrize(("kind", "tag", "edit"), [
    ("lbm", "PatientSize", lambda ds: setattr(ds, "PatientSex", "M")),
    ("bsa", "PatientSize", lambda ds: None),
    ("lbm", "PatientSex", lambda ds: setattr(ds, "PatientSize", "1.7")),
])
def test_lbm_bsa_need_size_and_sex(pet_series: tuple[Path, dict], tmp_path: Path, kind: str, tag: str, edit) -> None:
    bad = _edit(pet_series[0], tmp_path / "bad", edit)  # the writer leaves PatientSize out and PatientSex 'O'
    with pytest.raises(DicomSeriesError, match=rf"PT_0001\.dcm.*{tag}"):
        read_pet_suv(bad, kind=kind)


def test_series_resaved_later_uses_acquisition_time(pet_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Every file's SeriesTime moved 2 h later (re-saved); the one file with the earliest AcquisitionTime is not
    # the first slice: the scan start must still come from it, so SUV equals the original.
    original = read_pet_suv(pet_series[0])

    def resave(ds: pydicom.Dataset) -> None:
        start = float(str(ds.AcquisitionTime)[:2]) * 3600 + float(str(ds.AcquisitionTime)[2:4]) * 60 + float(
            str(ds.AcquisitionTime)[4:])
        later = start + 7200 + (0 if int(ds.InstanceNumber) == 12 else 60)  # slice 12 acquired first
        ds.AcquisitionTime = f"{int(later // 3600):02d}{int(later % 3600 // 60):02d}{later % 60:05.2f}"
        ds.SeriesTime = f"{int((start + 9000) // 3600):02d}{int((start + 9000) % 3600 // 60):02d}00"
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = (
            f"{int((start + 7200 - UPTAKE_S) // 3600):02d}{int((start + 7200 - UPTAKE_S) % 3600 // 60):02d}"
            f"{(start + 7200 - UPTAKE_S) % 60:05.2f}")

    moved = read_pet_suv(_edit(pet_series[0], tmp_path / "resaved", resave))
    assert moved.meta["uptake_time_s"] == pytest.approx(UPTAKE_S, abs=0.01)
    assert np.allclose(moved.array, original.array, rtol=1e-6)
