"""DICOM on real scanner files (TCIA STS, GE): indexing by header, CT/PET pairing, irregular PET slices, SUV."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import EnhancedCTImageStorage, JPEG2000Lossless, JPEGLSLossless, RLELossless

from fusion.errors import DicomSeriesError
from imaging.dicom_fastread import fast_read
from imaging.dicom_index import index_dicom, pair_ct_pet
from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def dicom_root() -> Path:
    return realdata_dir() / "dicom"


def test_index_groups_real_tree_by_header(dicom_root: Path, tmp_path: Path) -> None:
    # A messy copy: non-telling names, no extensions, a non-DICOM file, a corrupt DICOM, a copied RTSTRUCT.
    src = dicom_root / "sts_cropped" / "STS_002"
    messy = tmp_path / "download"
    for n, f in enumerate(sorted(src.rglob("*.dcm"))):
        dst = messy / f"d{n % 3}" / "x" / f"IM{n:05d}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    (messy / "notes.txt").write_text("not dicom")
    broken = messy / "broken"
    broken.write_bytes((src / "CT" / "mask" / "RS.dcm").read_bytes()[:300])
    shutil.copy(src / "PET" / "mask" / "RS.dcm", messy / "copy_of_rs")

    index = index_dicom(messy)
    by_mod = {}
    for s in index:
        by_mod.setdefault(s.modality, []).append(s)
    assert sorted(by_mod) == ["CT", "PT", "RTSTRUCT"]
    assert [s.n_files for s in by_mod["CT"]] == [48] and [s.n_files for s in by_mod["PT"]] == [48]
    assert len(by_mod["RTSTRUCT"]) == 2
    truth_ct = pydicom.dcmread(next((src / "CT" / "image").glob("*.dcm")), stop_before_pixels=True)
    ct = by_mod["CT"][0]
    assert (ct.patient_id, ct.series_uid, ct.study_uid) == (
        "STS_002", truth_ct.SeriesInstanceUID, truth_ct.StudyInstanceUID)
    assert ct.frame_of_reference_uid == truth_ct.FrameOfReferenceUID and ct.path == messy
    # The RTSTRUCT's frame of reference comes from ReferencedFrameOfReferenceSequence.
    assert all(s.frame_of_reference_uid == truth_ct.FrameOfReferenceUID for s in by_mod["RTSTRUCT"])
    assert sum(len(s.duplicates) for s in by_mod["RTSTRUCT"]) == 1  # the copied RS is one SOP instance
    assert [p for p, _ in index.problems] == [str(broken)]
    assert "missing DICOM tag SeriesInstanceUID" in index.problems[0][1]  # pydicom stops quietly at the cut

    (pair,) = pair_ct_pet(index)
    assert pair.ct is ct and pair.pet is by_mod["PT"][0] and pair.matched_by == "frame_of_reference"


def test_index_pairs_two_pets_with_one_ct(dicom_root: Path) -> None:
    index = index_dicom([dicom_root / "sts_cropped" / "STS_001", dicom_root / "sts_raw_pet" / "STS_001"])
    pairs = pair_ct_pet(index)
    assert sorted(p.pet.n_files for p in pairs) == [59, 267]
    assert all(p.ct is not None and p.ct.n_files == 59 and p.matched_by == "frame_of_reference" for p in pairs)
    raw = next(s for s in index if s.modality == "PT" and s.n_files == 267)
    assert raw.path == dicom_root / "sts_raw_pet" / "STS_001" / "image"


def _hu_by_hand(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_ge_whole_body_pet_irregular_gaps_and_suv_by_hand(dicom_root: Path) -> None:
    # GE Discovery ST, Units BQML, DecayCorrection START: 267 slices with gaps of 3.19, 3.27 and 3.29 mm.
    series = dicom_root / "sts_raw_pet" / "STS_001" / "image"
    suv = read_pet_suv(series)
    assert suv.units == "SUVbw" and suv.shape == (267, 128, 128)
    assert suv.meta["slice_gap_min_mm"] == pytest.approx(3.19, abs=1e-3)
    assert suv.meta["slice_gap_max_mm"] == pytest.approx(3.29, abs=1e-3)
    assert suv.meta["slice_resampled"] and suv.spacing_mm[0] == pytest.approx(3.27, abs=1e-3)
    # The deviations cancel along the bed: every slice lies within 0.05 mm of the uniform grid and is kept as is.
    assert suv.meta["n_interpolated_slices"] == 0 and suv.meta["max_snap_shift_mm"] < 0.05

    # SUVbw by hand from the raw tags of one file: stored * slope + intercept, decayed dose, weight.
    path = series / "1-120.dcm"
    ds = pydicom.dcmread(path)
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    weight_g, dose_bq, half_life_s = float(ds.PatientWeight) * 1000, float(rp.RadionuclideTotalDose), float(
        rp.RadionuclideHalfLife)
    assert (weight_g, half_life_s) == (71000.0, 6588.0) and dose_bq == pytest.approx(3.888e8, rel=1e-3)
    assert (str(ds.Units), str(ds.DecayCorrection)) == ("BQML", "START")

    def seconds(tm: str) -> float:
        return int(tm[0:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])

    t_series, t_inject = seconds(str(ds.SeriesTime)), seconds(str(rp.RadiopharmaceuticalStartTime))
    assert t_series - t_inject == pytest.approx(2711.0)  # 11:20:11 - 10:35:00
    decayed = dose_bq * 2.0 ** (-(t_series - t_inject) / half_life_s)
    by_hand = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    by_hand *= weight_g / decayed
    j, i = np.unravel_index(np.argmax(by_hand), by_hand.shape)
    k = suv.voxel_coords(np.array([float(v) for v in ds.ImagePositionPatient]))[0]
    assert abs(k - round(k)) < 0.02
    assert by_hand[j, i] > 1.0
    assert suv.array[int(round(k)), j, i] == pytest.approx(by_hand[j, i], rel=1e-5)
    assert np.allclose(suv.array[int(round(k))], by_hand, rtol=1e-5, atol=1e-6)
    # The fast scanner (used by read_dicom_series) reads GE's implicit-VR headers to the same Bq/ml.
    assert all(fast_read(f, f.read_bytes()) is not None for f in sorted(series.iterdir())[::25])
    activity = read_dicom_series(series)
    assert activity.units == "BQML" and activity.meta == {k: v for k, v in suv.meta.items() if k in activity.meta}
    assert np.allclose(activity.array * np.float32(suv.meta["suv_scale"]), suv.array, rtol=1e-6)


def test_gml_pet_passes_through_and_ct_hu(dicom_root: Path) -> None:
    pet_dir = dicom_root / "sts_cropped" / "STS_001" / "PET" / "image"
    suv = read_pet_suv(pet_dir)
    assert suv.units == "SUVbw" and suv.meta["source_units"] == "GML" and suv.meta["suv_scale"] == 1.0
    for name in suv.meta["files"][::20]:
        ds = pydicom.dcmread(pet_dir / name)
        k = int(round(suv.voxel_coords(np.array([float(v) for v in ds.ImagePositionPatient]))[0]))
        assert np.allclose(suv.array[k], _hu_by_hand(pet_dir / name), rtol=1e-6, atol=1e-6)
    ct_dir = dicom_root / "sts_cropped" / "STS_001" / "CT" / "image"
    ct = read_dicom_series(ct_dir)
    assert ct.units == "HU" and ct.shape == (59, 202, 198) and not ct.meta["slice_resampled"]
    first = pydicom.dcmread(ct_dir / ct.meta["files"][0])
    assert np.allclose(ct.affine[:3, 3], [float(v) for v in first.ImagePositionPatient])
    assert np.array_equal(ct.array[0], _hu_by_hand(ct_dir / ct.meta["files"][0]).astype(np.float32))
    assert suv.meta["frame_of_reference_uid"] == ct.meta["frame_of_reference_uid"]


def _ct_subset(dicom_root: Path, dst: Path, n: int = 12) -> list[Path]:
    """The first n slices (by name) of the real STS_002 CT, copied to dst."""
    dst.mkdir(parents=True)
    files = sorted((dicom_root / "sts_cropped" / "STS_002" / "CT" / "image").glob("*.dcm"))[:n]
    return [Path(shutil.copy(f, dst / f.name)) for f in files]


def test_compressed_transfer_syntaxes_give_identical_hu(dicom_root: Path, tmp_path: Path) -> None:
    plain = _ct_subset(dicom_root, tmp_path / "plain")
    reference = read_dicom_series(tmp_path / "plain")
    assert len({float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in plain}) == 12
    packed = tmp_path / "packed"
    packed.mkdir()
    syntaxes = [RLELossless, JPEGLSLossless, JPEG2000Lossless]
    for n, f in enumerate(plain):  # one series mixing three lossless compressions, as PACS exports can
        ds = pydicom.dcmread(f)
        ds.compress(syntaxes[n % 3])
        ds.save_as(packed / f"IM{n}")
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for p in packed.iterdir()} == {str(s) for s in syntaxes}
    shutil.copy(dicom_root / "sts_cropped" / "STS_002" / "CT" / "mask" / "RS.dcm", packed / "RS")  # ignored
    volume = read_dicom_series(packed)
    assert np.array_equal(volume.array, reference.array) and np.allclose(volume.affine, reference.affine)
    assert volume.array.min() < -900 and volume.array.max() > 100  # real HU range: air to soft tissue


def _enhanced_ct(files: list[Path], out: Path, perm: np.ndarray) -> None:
    """An Enhanced-CT-style multi-frame file: per-frame positions and rescale, frames in `perm` order."""
    dss = [pydicom.dcmread(f) for f in files]
    mf = pydicom.dcmread(files[0])
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
               "SliceLocation"):
        if kw in mf:
            delattr(mf, kw)
    mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    mf.NumberOfFrames = len(files)
    shared = Dataset()
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = dss[0].PixelSpacing, dss[0].SliceThickness
    orient.ImageOrientationPatient = dss[0].ImageOrientationPatient
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    mf.SharedFunctionalGroupsSequence = [shared]
    frames, pixels = [], []
    for f, src in enumerate(perm):
        ds = dss[src]
        item, pos, rescale = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = ds.ImagePositionPatient
        rescale.RescaleSlope, rescale.RescaleIntercept = ds.RescaleSlope, float(ds.RescaleIntercept) + 10 * f
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [rescale]
        frames.append(item)
        pixels.append((ds.pixel_array.astype(np.int16) - 10 * f).astype(np.int16))  # same HU, per-frame intercept
    mf.PerFrameFunctionalGroupsSequence = frames
    mf.PixelData = np.stack(pixels).tobytes()
    mf.save_as(out)


def test_enhanced_multiframe_matches_classic_and_compresses(dicom_root: Path, tmp_path: Path) -> None:
    files = _ct_subset(dicom_root, tmp_path / "classic")
    reference = read_dicom_series(tmp_path / "classic")
    perm = np.random.default_rng(0).permutation(len(files))
    (tmp_path / "mf").mkdir()
    _enhanced_ct(files, tmp_path / "mf" / "enhanced", perm)
    volume = read_dicom_series(tmp_path / "mf")
    assert np.array_equal(volume.array, reference.array) and np.allclose(volume.affine, reference.affine)
    ds = pydicom.dcmread(tmp_path / "mf" / "enhanced")
    ds.compress(RLELossless)
    (tmp_path / "mfc").mkdir()
    ds.save_as(tmp_path / "mfc" / "enhanced_rle")
    assert np.array_equal(read_dicom_series(tmp_path / "mfc").array, reference.array)


def test_ibsi_phantom_multiframe_coronal(tmp_path: Path) -> None:
    # IBSI digital phantom: one enhanced MR file, 4 frames, coronal (normal +y), frames stored at y = 3, 2, 1, 0.
    src = realdata_dir() / "ibsi" / "digital_phantom" / "dicom" / "image"
    volume = read_dicom_series(src)
    ds = pydicom.dcmread(src / "phantom.dcm")
    ys = [float(f.PlanePositionSequence[0].ImagePositionPatient[1]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert ys == [3.0, 2.0, 1.0, 0.0] and volume.shape == (4, 4, 5)
    assert np.array_equal(volume.array, ds.pixel_array[::-1].astype(np.float32))  # sorted along +y
    # columns: k along the normal +y, j along the column cosine -z, i along the row cosine +x (1 mm each)
    assert np.allclose(volume.affine[:3, :3], [[0, 0, 1], [1, 0, 0], [0, -1, 0]])


def test_undecodable_series_fails_alone(dicom_root: Path, tmp_path: Path) -> None:
    tree = tmp_path / "patient"
    _ct_subset(dicom_root, tree / "a")
    pet = sorted((dicom_root / "sts_cropped" / "STS_002" / "PET" / "image").glob("*.dcm"))[:6]
    (tree / "b").mkdir()
    for n, f in enumerate(pet):
        ds = pydicom.dcmread(f)
        if n == 3:  # RLE-compress one slice, then cut its codestream: a broken file inside a PACS export
            ds.compress(RLELossless)
            fragment = next(generate_fragments(ds.PixelData))
            ds.PixelData = encapsulate([fragment[: len(fragment) // 3]])
        ds.save_as(tree / "b" / f"{n:03d}")
    index = index_dicom(tree)
    assert sorted(s.modality for s in index) == ["CT", "PT"] and not index.problems
    ct = next(s for s in index if s.modality == "CT")
    pt = next(s for s in index if s.modality == "PT")
    assert read_dicom_series(ct).shape == (12, 143, 161)
    with pytest.raises(DicomSeriesError, match=r"b/003: DICOM tag PixelData cannot be decoded \(transfer syntax RLE"):
        read_dicom_series(pt)
