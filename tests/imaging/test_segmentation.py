"""Segmentations as ROIs: RTSTRUCT contours, DICOM SEG (highdicom-written and the IBSI phantom) and NIfTI masks."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from flows.synthetic.dicom_writer import write_ct_series
from fusion.errors import SegmentationError
from imaging.dicom_series import read_dicom_series
from imaging.nifti import read_nifti, write_nifti
from imaging.segmentation import find_roi, list_rois, read_roi_mask, roi_mask
from imaging.volume import Volume
from tests.imaging.dicom_writers import write_rtstruct
from tests.realdata import realdata_dir

FOR_UID = "1.2.826.0.1.3680043.8.498.1"
ORIGIN = np.array([10.0, 20.0, -30.0])  # LPS mm of voxel [0, 0, 0]


def _grid(slice_mm: float = 2.0, origin_z: float = ORIGIN[2], shape=(6, 16, 16)) -> Volume:
    """Axial grid: slices along +z (`slice_mm`), rows along +y (1 mm), columns along +x (1 mm)."""
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, slice_mm]
    affine[:3, 1] = [0.0, 1.0, 0.0]
    affine[:3, 2] = [1.0, 0.0, 0.0]
    affine[:3, 3] = [ORIGIN[0], ORIGIN[1], origin_z]
    return Volume(np.zeros(shape), affine, "HU", {"frame_of_reference_uid": FOR_UID, "series_uid": "1.2.3"})


def _square(i0: float, i1: float, j0: float, j1: float, z: float) -> np.ndarray:
    """Closed square contour in LPS mm from voxel-index bounds (columns i, rows j) at height z."""
    xs, ys = ORIGIN[0] + np.array([i0, i1, i1, i0]), ORIGIN[1] + np.array([j0, j0, j1, j1])
    return np.stack([xs, ys, np.full(4, z)], axis=1)


def _write_rtstruct(path: Path, rois: dict[str, list[np.ndarray]], for_uid: str = FOR_UID) -> Path:
    return write_rtstruct(path, rois, for_uid)


def test_rtstruct_square_with_hole_and_island(tmp_path: Path) -> None:
    vol = _grid()
    planes = [ORIGIN[2] + 2.0 * k for k in (1, 2, 3)]
    contours = [_square(3.5, 11.5, 3.5, 11.5, z) for z in planes]
    contours.append(_square(6.5, 8.5, 6.5, 8.5, planes[1]))  # hole inside the middle plane's square
    contours.append(_square(12.5, 14.5, 0.5, 2.5, planes[2]))  # separate island on the top plane
    path = _write_rtstruct(tmp_path / "rs.dcm", {"GTV": contours, "Empty": []})
    expected = np.zeros(vol.shape, dtype=bool)
    expected[1:4, 4:12, 4:12] = True
    expected[2, 7:9, 7:9] = False
    expected[3, 1:3, 13:15] = True
    assert [r.name for r in list_rois(path)] == ["GTV", "Empty"]
    assert np.array_equal(read_roi_mask(path, "GTV", vol), expected)
    assert not read_roi_mask(path, "empty", vol).any()  # case-insensitive name, no contours


def test_rtstruct_nearest_plane_on_finer_and_coarser_grids(tmp_path: Path) -> None:
    planes = [-28.0, -26.0, -24.0]  # contours every 2 mm: the ROI is the slab [-29, -23] mm
    path = _write_rtstruct(tmp_path / "rs.dcm", {"GTV": [_square(3.5, 11.5, 3.5, 11.5, z) for z in planes]})
    fine = _grid(slice_mm=1.0, origin_z=-31.5, shape=(12, 16, 16))  # slice centres -31.5 ... -20.5
    mask = read_roi_mask(path, "GTV", fine)
    assert [k for k in range(12) if mask[k].any()] == [3, 4, 5, 6, 7, 8]  # -28.5 ... -23.5
    assert mask.sum() == 6 * 64  # 6 mm x 64 mm^2 = the slab's volume
    coarse = _grid(slice_mm=4.0, origin_z=-30.5, shape=(3, 16, 16))  # -30.5, -26.5, -22.5
    assert [k for k in range(3) if read_roi_mask(path, "GTV", coarse)[k].any()] == [1, 2]


def test_rtstruct_errors_name_the_file(tmp_path: Path) -> None:
    other = _write_rtstruct(tmp_path / "other_for.dcm", {"GTV": [_square(3.5, 8.5, 3.5, 8.5, -28.0)]},
                            for_uid="1.2.3.999")
    with pytest.raises(SegmentationError, match=r"other_for\.dcm.*1\.2\.3\.999.*expected " + FOR_UID):
        read_roi_mask(other, "GTV", _grid())
    tilted = _square(3.5, 8.5, 3.5, 8.5, -28.0)
    tilted[2:, 2] += 5.0
    path = _write_rtstruct(tmp_path / "tilted.dcm", {"GTV": [tilted]})
    with pytest.raises(SegmentationError, match=r"tilted\.dcm.*'GTV'.*parallel"):
        read_roi_mask(path, "GTV", _grid())
    with pytest.raises(SegmentationError, match=r"'Nope' not found.*GTV"):
        find_roi(list_rois(path), "Nope")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(SegmentationError, match=r"junk\.dcm: unreadable DICOM"):
        list_rois(junk)


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Volume]:
    out = tmp_path_factory.mktemp("segct") / "ct"
    write_ct_series(out, patient_id="P-SEG", tumour_centre_mm=np.zeros(3), tumour_radius_mm=2.0,
                    shape=(7, 20, 24), pixel_spacing_mm=(0.8, 0.9),
                    slice_thickness_mm=2.5, seed=3)
    return out, read_dicom_series(out)


def _blob_mask(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kk, jj, ii = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    centre = np.array(shape) / 2 + rng.normal(0, 1, 3)
    mask = ((kk - centre[0]) / 2.5) ** 2 + ((jj - centre[1]) / 6) ** 2 + ((ii - centre[2]) / 5) ** 2 <= 1
    mask[0] = mask[-1] = False  # empty end slices: highdicom omits those frames
    return mask & (rng.random(shape) > 0.1)  # ragged, with holes


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_dicom_seg_from_highdicom_recovered_exactly(ct_series: tuple[Path, Volume], tmp_path: Path,
                                                    seg_type: str) -> None:
    folder, ct = ct_series
    files = [folder / Path(f).name for f in ct.meta["files"]]  # slice order k = 0 ... n-1
    sources = [pydicom.dcmread(f) for f in files]
    gtv, node = _blob_mask(ct.shape, 1), _blob_mask(ct.shape, 2) & ~_blob_mask(ct.shape, 1)
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[gtv], labels[node] = 1, 2
    code = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    descriptions = [hd.seg.SegmentDescription(number, name, code, code, hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                    for number, name in ((1, "GTV"), (2, "Node"))]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues[seg_type],
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="FusionRx test",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
    )
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    refs = list_rois(path)
    assert [(r.kind, r.name) for r in refs] == [("seg", "GTV"), ("seg", "Node")]
    assert np.array_equal(roi_mask(refs[0], ct), gtv)
    assert np.array_equal(roi_mask(refs[1], ct), node)
    # The same SEG on the grid stored the other way up (slices reversed): placed through the affines.
    flipped_affine = ct.affine.copy()
    flipped_affine[:3, 3] = ct.world_coords(np.array([ct.shape[0] - 1, 0, 0]))
    flipped_affine[:3, 0] *= -1
    flipped = Volume(ct.array[::-1], flipped_affine, ct.units, ct.meta)
    assert np.array_equal(roi_mask(refs[0], flipped), gtv[::-1])


def test_nifti_mask_placed_through_affines(ct_series: tuple[Path, Volume], tmp_path: Path) -> None:
    _, ct = ct_series
    # A NIfTI written by nibabel alone (RAS, 1.5 mm, its own origin) with one voxel set.
    ras = np.diag([-1.5, 1.5, 2.0, 1.0])
    centre_lps = ct.world_coords(np.array([3, 10, 12]))  # a CT voxel centre
    ras[:3, 3] = [-centre_lps[0], -centre_lps[1], centre_lps[2]] - ras[:3, :3] @ np.array([5, 5, 3])
    data = np.zeros((10, 10, 6), dtype=np.uint8)
    data[5, 5, 3] = 1
    path = tmp_path / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(data, ras), path)
    mask = read_roi_mask(path, "lesion", ct)
    point_ras = ras @ np.array([5, 5, 3, 1.0])
    expected = np.round(ct.voxel_coords(np.array([-point_ras[0], -point_ras[1], point_ras[2]]))).astype(int)
    # 1.5 x 1.5 x 2 mm NIfTI voxel vs 0.9 x 0.8 x 2.5 mm CT voxels: only the CT voxel at its centre falls in it.
    assert np.array_equal(expected, [3, 10, 12]) and np.array_equal(np.argwhere(mask), [[3, 10, 12]])
    # Round trip through our writer on the CT grid is exact; several labels become several ROIs.
    labels = ct.with_array(_blob_mask(ct.shape, 4) * 1 + _blob_mask(ct.shape, 5) * 2 * ~_blob_mask(ct.shape, 4))
    write_nifti(labels, tmp_path / "labels.nii.gz", np.uint8)
    refs = list_rois(tmp_path / "labels.nii.gz")
    assert [r.name for r in refs] == ["labels:1", "labels:2"]
    assert np.array_equal(roi_mask(refs[1], ct), labels.array == 2)
    back = read_nifti(tmp_path / "labels.nii.gz")
    assert np.allclose(back.affine, ct.affine, atol=1e-5) and np.array_equal(back.array, labels.array)


def test_ibsi_phantom_dicom_seg_matches_its_nifti_mask() -> None:
    """The IBSI phantom's SEG (coronal frames, 1-bit packed, per-frame positions) equals the NIfTI mask."""
    root = realdata_dir() / "ibsi" / "digital_phantom"
    seg_path = root / "dicom" / "mask" / "mask.dcm"
    (ref,) = list_rois(seg_path)
    assert (ref.kind, ref.name) == ("seg", "ROI")
    # The SEG declares 1 mm voxels, columns along +x, rows along -z, frames at y = 3, 2, 1, 0; the NIfTI
    # mask stores the same phantom as [z, y, x] with z upwards. Grid [k=-z, j=y, i=x] in the SEG's space:
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = [0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]
    grid = Volume(np.zeros((4, 4, 5)), affine, "1", {"frame_of_reference_uid": ref.frame_of_reference_uid})
    nifti_mask = read_nifti(root / "nifti" / "mask" / "mask.nii.gz").array > 0
    mask = roi_mask(ref, grid)
    assert mask.sum() == 74 == nifti_mask.sum()
    assert np.array_equal(mask, nifti_mask)
