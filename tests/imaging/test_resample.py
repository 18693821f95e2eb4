"""PET -> CT resampling through the affines: tumour lands on the CT tumour, exact identity and linear fields."""

from __future__ import annotations


import numpy as np
import pytest

from flows.synthetic.dicom_writer import ct_geometry, lung_tumour_centre_mm, write_ct_series, write_pet_series
from fusion.errors import DicomSeriesError
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.phenotypes import pet_tumour_mask, tumour_centroid_mm
from imaging.resample import resample_to_reference
from imaging.volume import Volume

PID = "TCGA-FX-0003"


@pytest.fixture(scope="module")
def ct_and_pet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, Volume, dict]:
    root = tmp_path_factory.mktemp("petct")
    centre = lung_tumour_centre_mm(np.random.default_rng(5), ct_geometry(), 10.0)
    ct_truth = write_ct_series(root / "ct", patient_id=PID, tumour_centre_mm=centre, tumour_radius_mm=10.0, seed=5)
    write_pet_series(root / "pet", patient_id=PID, tumour_centre_mm=centre, tumour_radius_mm=10.0, tumour_suv=7.0,
                     weight_kg=80.0, dose_bq=300e6, injection_to_scan_s=3900.0, seed=6,
                     frame_of_reference_uid=ct_truth["frame_of_reference_uid"], study_uid=ct_truth["study_uid"])
    return read_ct(root / "ct"), read_pet_suv(root / "pet"), ct_truth


def test_pet_on_ct_grid_hits_ct_tumour(ct_and_pet: tuple[Volume, Volume, dict]) -> None:
    ct, pet, truth = ct_and_pet
    assert pet.shape != ct.shape
    on_ct = resample_to_reference(pet, ct)
    assert on_ct.shape == ct.shape and np.allclose(on_ct.affine, ct.affine)
    assert on_ct.units == "SUVbw" and on_ct.meta["series_uid"] == pet.meta["series_uid"]
    centre = np.array(truth["tumour_centre_mm"])
    k, j, i = np.rint(ct.voxel_coords(centre)).astype(int)
    assert on_ct.array[k, j, i] == pytest.approx(7.0, rel=1e-2)
    assert on_ct.array.max() == pytest.approx(7.0, rel=1e-2)
    # The hot spot's centroid lies on the planted centre (sub-voxel of the 4-6 mm PET grid).
    hot = tumour_centroid_mm(pet_tumour_mask(on_ct, fraction=0.5), on_ct)
    assert np.linalg.norm(hot - centre) < 2.0
    # And on the CT tumour: PET is hot exactly where CT shows soft tissue inside the lung.
    tumour_ct = np.sum((ct.world_coords(np.argwhere(on_ct.array > 3.5)) - centre) ** 2, axis=1) ** 0.5
    assert np.percentile(tumour_ct, 95) < 10.0 + 4.0


def test_identity_resample_is_exact(ct_and_pet: tuple[Volume, Volume, dict]) -> None:
    _, pet, _ = ct_and_pet
    same = resample_to_reference(pet, pet, order=3)
    assert np.array_equal(same.array, pet.array)


def _ramp(shape: tuple[int, int, int], affine: np.ndarray) -> Volume:
    """Volume whose value at each voxel is a known linear function of its world position."""
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    vol = Volume(np.zeros(shape), affine, "HU")
    xyz = vol.world_coords(idx)
    values = 2.0 * xyz[:, 0] - 0.5 * xyz[:, 1] + 3.0 * xyz[:, 2] + 7.0
    return vol.with_array(values.reshape(shape))


def test_linear_field_resampled_exactly_on_rotated_finer_grid() -> None:
    moving_affine = np.array([[4.0, 0, 0, -40.0], [0, 3.0, 0, -30.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])
    moving_affine = moving_affine[[2, 1, 0, 3]]  # array axis k -> z
    moving = _ramp((20, 20, 20), moving_affine)
    # Reference: 1.5 mm voxels, rotated 30 degrees about z, shifted, well inside the moving field of view.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    ref_affine = np.eye(4)
    ref_affine[:3, 0] = [0.0, 0.0, 1.5]
    ref_affine[:3, 1] = [-s * 1.5, c * 1.5, 0.0]
    ref_affine[:3, 2] = [c * 1.5, s * 1.5, 0.0]
    ref_affine[:3, 3] = [-5.0, -8.0, -10.0]
    reference = _ramp((10, 12, 12), ref_affine)
    out = resample_to_reference(moving, reference)
    assert np.allclose(out.array, reference.array, atol=1e-3)
    # Outside the moving grid the fill value is used.
    far = reference.with_array(reference.array)
    far.affine[:3, 3] += 500.0
    assert np.all(resample_to_reference(moving, far, fill=-1.0).array == -1.0)


def test_frame_of_reference_mismatch_rejected(ct_and_pet: tuple[Volume, Volume, dict]) -> None:
    ct, pet, _ = ct_and_pet
    other = pet.with_array(pet.array, frame_of_reference_uid="1.2.3.4")
    with pytest.raises(DicomSeriesError, match="FrameOfReferenceUID"):
        resample_to_reference(other, ct)
    assert resample_to_reference(other, ct, check_frame_of_reference=False).shape == ct.shape
