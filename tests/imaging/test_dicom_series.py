"""DICOM series reading: planted HU recovered, affine, slice order, clear errors, pydicom's real CT file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from flows.synthetic.dicom_writer import ct_geometry, lung_tumour_centre_mm, write_ct_series
from fusion.errors import DicomSeriesError
from imaging.ct import body_mask, lung_mask, read_ct
from imaging.dicom_series import read_dicom_series

PID = "TCGA-FX-0001"
RADIUS_MM = 12.0


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ct") / PID
    centre = lung_tumour_centre_mm(np.random.default_rng(3), ct_geometry(), RADIUS_MM)
    truth = write_ct_series(out, patient_id=PID, tumour_centre_mm=centre, tumour_radius_mm=RADIUS_MM, seed=3)
    return out, truth


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_planted_hu_and_geometry_recovered(ct_series: tuple[Path, dict]) -> None:
    directory, truth = ct_series
    ct = read_ct(directory)
    assert ct.units == "HU" and ct.shape == (40, 96, 96)
    assert ct.spacing_mm == pytest.approx((3.0, 2.0, 2.0))
    assert ct.meta["patient_id"] == PID and ct.meta["modality"] == "CT"
    assert ct.meta["series_uid"] == truth["series_uid"]
    assert ct.meta["frame_of_reference_uid"] == truth["frame_of_reference_uid"]
    # voxel [0, 0, 0] sits at the written origin; +1 along i is +2 mm in x, +1 along k is +3 mm in z.
    assert np.allclose(ct.world_coords(np.array([0, 0, 0])), truth["origin_mm"])
    assert np.allclose(ct.world_coords(np.array([1, 0, 1])) - truth["origin_mm"], [2.0, 0.0, 3.0])

    # The affine maps the planted tumour centre to the voxel holding tumour HU, its inverse back.
    centre = np.array(truth["tumour_centre_mm"])
    k, j, i = np.rint(ct.voxel_coords(centre)).astype(int)
    assert np.allclose(ct.world_coords(ct.voxel_coords(centre)), centre)
    core = ct.array[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3]
    assert core.mean() == pytest.approx(truth["tumour_hu"], abs=4.0)

    noise = 4 * truth["noise_hu"]
    body, lung = body_mask(ct.array), lung_mask(ct.array)
    assert ct.array[~body].mean() == pytest.approx(truth["air_hu"], abs=3.0)
    assert np.abs(ct.array[lung]).max() < 1000 and ct.array[lung].mean() == pytest.approx(truth["lung_hu"], abs=3.0)
    tissue = body & ~lung & (np.abs(ct.array - truth["tissue_hu"]) < noise)
    assert tissue.sum() > 0.2 * body.sum()
    assert ct.array[tissue].mean() == pytest.approx(truth["tissue_hu"], abs=1.0)
    # Lung lies on both sides of the midline (x < 0 right lung, x > 0 left lung in LPS).
    x_of_i = ct.world_coords(np.stack([np.zeros(96), np.zeros(96), np.arange(96)], axis=1))[:, 0]
    lung_cols = lung.any(axis=(0, 1))
    assert lung_cols[x_of_i < -20].any() and lung_cols[x_of_i > 20].any() and not lung_cols[np.abs(x_of_i) < 4].any()


def test_writer_is_deterministic(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    directory, truth = ct_series
    again = write_ct_series(tmp_path / "again", patient_id=PID, tumour_centre_mm=truth["tumour_centre_mm"],
                            tumour_radius_mm=RADIUS_MM, seed=3)
    assert again["series_uid"] == truth["series_uid"]
    for name in ("CT_0001.dcm", "CT_0040.dcm"):
        assert (tmp_path / "again" / name).read_bytes() == (directory / name).read_bytes()


def test_slice_order_independent_of_file_names(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    directory, _ = ct_series
    reference = read_dicom_series(directory)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    files = sorted(directory.glob("*.dcm"))
    perm = np.random.default_rng(0).permutation(len(files))
    for n, src in zip(perm, files):
        shutil.copy(src, shuffled / f"img{n:03d}")  # names with no relation to the slice position
    volume = read_dicom_series(shuffled)
    assert np.array_equal(volume.array, reference.array)
    assert np.allclose(volume.affine, reference.affine)


def test_reversed_slice_positions_sort_along_normal(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Renumber files so the first file holds the highest z: order must come from IPP, not names.
    directory, _ = ct_series
    reference = read_dicom_series(directory)
    rev = tmp_path / "rev"
    rev.mkdir()
    files = sorted(directory.glob("*.dcm"))
    for n, src in enumerate(reversed(files)):
        shutil.copy(src, rev / f"CT_{n + 1:04d}.dcm")
    assert np.array_equal(read_dicom_series(rev).array, reference.array)


def test_truncated_file_names_the_file(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    bad = _copy(ct_series[0], tmp_path / "bad")
    victim = bad / "CT_0007.dcm"
    victim.write_bytes(victim.read_bytes()[:1500])
    with pytest.raises(DicomSeriesError, match="CT_0007.dcm"):
        read_dicom_series(bad)


def test_non_dicom_files_ignored_corrupt_dicom_named(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Real downloads carry README/notes/DICOMDIR beside the slices: skipped. A DICOM file that breaks is named.
    reference = read_dicom_series(ct_series[0])
    extra = _copy(ct_series[0], tmp_path / "extra")
    (extra / "notes.txt").write_text("not a DICOM file")
    (extra / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    assert np.array_equal(read_dicom_series(extra).array, reference.array)
    bad = _copy(ct_series[0], tmp_path / "bad")
    victim = bad / "CT_0004.dcm"
    victim.write_bytes(victim.read_bytes()[:200])  # cut inside the header
    with pytest.raises(DicomSeriesError, match=r"CT_0004\.dcm"):
        read_dicom_series(bad)


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "PixelSpacing", "RescaleSlope", "SeriesInstanceUID"])
def test_missing_tag_names_file_and_tag(ct_series: tuple[Path, dict], tmp_path: Path, tag: str) -> None:
    bad = _copy(ct_series[0], tmp_path / "bad")
    victim = bad / "CT_0012.dcm"
    ds = pydicom.dcmread(victim)
    delattr(ds, tag)
    ds.save_as(victim)
    with pytest.raises(DicomSeriesError, match=rf"CT_0012\.dcm.*{tag}"):
        read_dicom_series(bad)


def test_mixed_series_rejected(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    directory, truth = ct_series
    mixed = _copy(directory, tmp_path / "mixed")
    other = tmp_path / "other"
    write_ct_series(other, patient_id="TCGA-FX-0002", tumour_centre_mm=truth["tumour_centre_mm"],
                    tumour_radius_mm=RADIUS_MM, seed=4)
    shutil.copy(other / "CT_0005.dcm", mixed / "ZZ_other.dcm")
    with pytest.raises(DicomSeriesError, match=r"ZZ_other\.dcm.*SeriesInstanceUID"):
        read_dicom_series(mixed)


def test_duplicate_and_missing_slices_rejected(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    # The same SOP instance copied twice is one image: kept once and reported.
    copy = _copy(ct_series[0], tmp_path / "copy")
    shutil.copy(copy / "CT_0010.dcm", copy / "CT_0010b.dcm")
    volume = read_dicom_series(copy)
    assert volume.shape[0] == 40 and [Path(p).name for p in volume.meta["duplicate_files"]] == ["CT_0010b.dcm"]
    # Another image at the same position is ambiguous: refused.
    dup = _copy(ct_series[0], tmp_path / "dup")
    ds = pydicom.dcmread(dup / "CT_0010.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dup / "CT_0010b.dcm")
    with pytest.raises(DicomSeriesError, match="duplicates the slice position"):
        read_dicom_series(dup)

    gap = _copy(ct_series[0], tmp_path / "gap")
    (gap / "CT_0020.dcm").unlink()
    with pytest.raises(DicomSeriesError, match=r"CT_0021\.dcm.*slice gap of 6\.000 mm.*2\.00x the median"):
        read_dicom_series(gap)


def test_inconsistent_orientation_rejected(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    bad = _copy(ct_series[0], tmp_path / "bad")
    ds = pydicom.dcmread(bad / "CT_0003.dcm")
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(bad / "CT_0003.dcm")
    with pytest.raises(DicomSeriesError, match=r"CT_0003\.dcm.*ImageOrientationPatient"):
        read_dicom_series(bad)


def test_pydicom_real_ct_small(tmp_path: Path) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    series = tmp_path / "ct_small"
    series.mkdir()
    shutil.copy(src, series / src.name)
    ds = pydicom.dcmread(src)
    expected_hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)

    ct = read_ct(series)
    assert ct.shape == (1, 128, 128)
    assert np.array_equal(ct.array[0], expected_hu.astype(np.float32))
    # Hand check of a few stored values: slope 1, intercept -1024.
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
    assert ct.array[0, 64, 64] == float(ds.pixel_array[64, 64]) - 1024.0
    # Affine from IPP / IOP (identity) / PixelSpacing; slice step from SliceThickness for one slice.
    assert np.allclose(ct.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient])
    assert ct.spacing_mm == pytest.approx((float(ds.SliceThickness), 0.661468, 0.661468))
    assert np.allclose(ct.world_coords(np.array([0, 10, 20])),
                       np.array([float(v) for v in ds.ImagePositionPatient]) + [20 * 0.661468, 10 * 0.661468, 0])


def test_oblique_affine_from_orientation(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Rotate the whole series 90 degrees in-plane (rows along -x, columns along +y) and check the affine columns.
    rot = _copy(ct_series[0], tmp_path / "rot")
    for path in sorted(rot.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [0, 1, 0, -1, 0, 0]
        ds.save_as(path)
    volume = read_dicom_series(rot)
    assert np.allclose(volume.affine[:3, 1], [-2.0, 0.0, 0.0])  # row index j steps along the column cosine
    assert np.allclose(volume.affine[:3, 2], [0.0, 2.0, 0.0])  # column index i steps along the row cosine
    assert np.allclose(volume.affine[:3, 0], [0.0, 0.0, 3.0])  # slices along the normal (0, 0, 1)
