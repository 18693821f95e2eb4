"""DICOM series reading: planted HU recovered, affine, slice order, clear errors, pydicom's real CT file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

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


def _ramp_series(src: Path, dst: Path, z_mm: list[float]) -> Path:
    """Copies of the first slice at positions z_mm, each filled with HU = z (stored = 10*z, slope 0.1)."""
    dst.mkdir()
    template = pydicom.dcmread(sorted(src.glob("*.dcm"))[0])
    for n, z in enumerate(z_mm):
        ds = template.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [template.ImagePositionPatient[0], template.ImagePositionPatient[1], f"{z:.4f}"]
        ds.RescaleSlope, ds.RescaleIntercept = "0.1", "0"
        ds.PixelData = np.full((ds.Rows, ds.Columns), round(10 * z), dtype=np.int16).tobytes()
        ds.save_as(dst / f"s{n:03d}.dcm")
    return dst


def test_irregular_gaps_and_overlapping_beds_resampled(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    # Jittered slices (gaps 2.4 to 3.6 mm) plus a second bed overlapping the first by 6 mm (gaps of 1.5 mm).
    rng = np.random.default_rng(1)
    bed1 = [3.0 * k + rng.uniform(-0.3, 0.3) for k in range(12)]
    bed2 = [bed1[-1] - 4.5 + 3.0 * k for k in range(8)]
    volume = read_dicom_series(_ramp_series(ct_series[0], tmp_path / "beds", bed1 + bed2))
    z = np.sort(np.array(bed1 + bed2))
    gaps = np.diff(z)
    assert volume.meta["slice_resampled"] and volume.meta["n_source_slices"] == 20
    assert volume.meta["slice_gap_min_mm"] == pytest.approx(gaps.min(), abs=1e-3)
    assert volume.meta["slice_gap_max_mm"] == pytest.approx(gaps.max(), abs=1e-3)
    step = volume.spacing_mm[0]
    assert volume.shape[0] == round((z[-1] - z[0]) / np.median(gaps)) + 1
    assert step == pytest.approx((z[-1] - z[0]) / (volume.shape[0] - 1), abs=1e-3)
    # A linear ramp survives linear interpolation: every output slice holds its own z (stored in 0.1 HU steps).
    z_out = volume.world_coords(np.stack([np.arange(volume.shape[0]), np.zeros(volume.shape[0]),
                                          np.zeros(volume.shape[0])], axis=1))[:, 2]
    # A source slice within 5% of a step from a plane is taken unchanged (shift reported), others interpolated.
    nearest = np.abs(z_out[:, None] - z[None]).min(axis=1)
    snapped = nearest <= 0.05 * step
    assert volume.meta["n_interpolated_slices"] == int((~snapped).sum()) > 0
    assert volume.meta["max_snap_shift_mm"] == pytest.approx(nearest[snapped].max(), abs=1e-3)
    assert np.allclose(volume.array[~snapped, 5, 5], z_out[~snapped], atol=0.06)
    assert np.allclose(volume.array[snapped, 5, 5], z_out[snapped], atol=0.06 + 0.05 * step)
    assert np.allclose(volume.array[:, 5, 5], volume.array[:, 40, 60])


@pytest.mark.parametrize(("tag", "value", "message"), [
    ("PixelSpacing", ["2.5", "2.5"], "mixed pixel spacings"),
    ("Rows", None, "mixed matrix sizes"),
])
def test_mixed_spacing_or_size_rejected(ct_series: tuple[Path, dict], tmp_path: Path, tag: str, value,
                                        message: str) -> None:
    bad = _copy(ct_series[0], tmp_path / "bad")
    ds = pydicom.dcmread(bad / "CT_0009.dcm")
    if tag == "Rows":
        pixels = ds.pixel_array[:-8]
        ds.Rows, ds.PixelData = pixels.shape[0], pixels.tobytes()
    else:
        setattr(ds, tag, value)
    ds.save_as(bad / "CT_0009.dcm")
    with pytest.raises(DicomSeriesError, match=rf"CT_0009\.dcm.*{message}"):
        read_dicom_series(bad)


def test_folder_with_two_series_names_them_and_reads_one(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    directory, truth = ct_series
    both = tmp_path / "both"
    shutil.copytree(directory, both / "x" / "one")
    other = write_ct_series(both / "y", patient_id=PID, tumour_centre_mm=truth["tumour_centre_mm"],
                            tumour_radius_mm=RADIUS_MM, seed=9, shape=(6, 32, 32))
    with pytest.raises(DicomSeriesError, match="mixes 2 image series"):
        read_dicom_series(both)
    small = read_dicom_series(both, series_uid=other["series_uid"])
    assert small.shape == (6, 32, 32) and small.meta["source_dir"] == str(both / "y")


def test_fast_scanner_matches_pydicom_path(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    from imaging.dicom_fastread import fast_read
    from imaging.dicom_series import read_dicom_series_headers

    padded = _copy(ct_series[0], tmp_path / "padded")  # an element after the pixel data: full scan needed
    for path in sorted(padded.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        ds.DataSetTrailingPadding = b"\0" * 16
        ds.save_as(path)
    mr = tmp_path / "mr"
    mr.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), mr / "IM1")  # explicit VR, another vendor's header
    for directory in (ct_series[0], padded, mr):
        files = sorted(p for p in directory.iterdir())
        assert all(fast_read(f, f.read_bytes()) is not None for f in files)
        fast = read_dicom_series(directory)
        slow, headers = read_dicom_series_headers(directory)
        assert np.array_equal(fast.array, slow.array) and np.allclose(fast.affine, slow.affine)
        assert fast.meta == slow.meta and fast.units == slow.units
        assert headers[0].filename.endswith(fast.meta["files"][0]) and "PixelData" not in headers[0]
    # A compressed file is not for the scanner: pydicom reads it.
    jpeg = Path(get_testdata_file("JPEG2000.dcm"))
    assert fast_read(jpeg, jpeg.read_bytes()) is None


def test_one_reader_for_headers_and_pixels(ct_series: tuple[Path, dict], tmp_path: Path) -> None:
    """imaging.dicom_frames.read_header / read_image: Part 10 files, bare datasets without the preamble
    (forced only when the first bytes are a DICOM tag), partial header reads, non-DICOM files."""
    from imaging.dicom_fastread import FastImage
    from imaging.dicom_frames import looks_like_dicom, read_header, read_image

    src = sorted(ct_series[0].glob("*.dcm"))[0]
    truth = pydicom.dcmread(src)
    fast, full = read_image(src), read_image(src, fast=False)
    assert isinstance(fast, FastImage) and isinstance(full, pydicom.Dataset)
    assert np.array_equal(fast.pixels[0], full.pixel_array) and np.array_equal(full.pixel_array, truth.pixel_array)
    header = read_header(src)
    assert "PixelData" not in header and header.SOPInstanceUID == truth.SOPInstanceUID
    assert header.filename == str(src)
    partial = read_header(src, ["Modality", "SeriesInstanceUID", "Rows"], stop_after=0x00200010)
    assert partial.Modality == "CT" and "SeriesInstanceUID" in partial and "Rows" not in partial
    assert partial.filename == str(src)

    bare = tmp_path / "bare"  # the same dataset without preamble and file meta (old archives)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, truth)
    bare.write_bytes(buffer.getvalue())
    assert looks_like_dicom(bare)
    assert read_header(bare).SOPInstanceUID == truth.SOPInstanceUID
    bare_image = read_image(bare)  # not for the scanner (no preamble): pydicom, forced
    assert isinstance(bare_image, pydicom.Dataset) and bare_image.SOPInstanceUID == truth.SOPInstanceUID

    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM at all")
    assert not looks_like_dicom(junk) and read_image(junk) is None and read_image(junk, fast=False) is None
    with pytest.raises(DicomSeriesError, match=r"notes\.txt: unreadable DICOM file"):
        read_header(junk)


def test_nothing_else_calls_pydicom_dcmread() -> None:
    """One DICOM reader: product code reaches pydicom's reader only through imaging.dicom_frames."""
    root = Path(__file__).resolve().parents[2]
    callers = sorted(str(p.relative_to(root)) for pkg in ("imaging", "fusion", "flows", "omics", "molecules")
                     for p in (root / pkg).rglob("*.py")
                     if "dcmread(" in p.read_text() or "read_partial(" in p.read_text())
    assert callers == ["imaging/dicom_frames.py"]
