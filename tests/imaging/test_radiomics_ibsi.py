"""IBSI 1 digital phantom: our morphology, local intensity peak and statistics features against the consensus values."""

from __future__ import annotations


import numpy as np
import pytest

from imaging.nifti import read_nifti
from imaging.radiomics import discretise, ibsi_features, intensity_peaks, mesh_volume_area, roi_mesh
from imaging.volume import Volume
from tests.realdata import realdata_dir
from tests.imaging.ibsi import ibsi_agrees, ibsi_reference


@pytest.fixture(scope="module")
def features() -> dict[str, float]:
    root = realdata_dir() / "ibsi" / "digital_phantom" / "nifti"
    image = read_nifti(root / "image" / "phantom.nii.gz")
    mask = read_nifti(root / "mask" / "mask.nii.gz").array > 0
    return ibsi_features(image, mask)


def test_ibsi_phantom_features_within_tolerance(features: dict[str, float]) -> None:
    reference = ibsi_reference()
    checked = sorted(set(features) & set(reference))
    # every morphology, local intensity, statistics, intensity-histogram and IVH tag with a reference value
    wanted = {t for t in reference if t.startswith(("morph_", "loc_", "stat_", "ih_", "ivh_"))}
    assert wanted <= set(features), sorted(wanted - set(features))
    lines, failures = [], []
    for tag in checked:
        ref, tol = reference[tag]
        ok = ibsi_agrees(features[tag], ref, tol)
        lines.append(f"{tag:28s} {features[tag]:12.5g} {ref:10.4g} {tol:8.4g} {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(tag)
    print("\n".join(["tag                          ours         reference  tolerance", *lines]))
    assert len(checked) == 74
    assert not failures, failures
    assert features["morph_volume"] == pytest.approx(556, abs=4)
    assert features["morph_vol_approx"] == pytest.approx(592, abs=4)
    assert features["stat_mean"] == pytest.approx(2.15, abs=0.005)


def test_mesh_volume_of_a_sphere_and_peak_of_a_flat_image() -> None:
    spacing = (1.0, 0.5, 0.5)
    kk, jj, ii = np.meshgrid(np.arange(40), np.arange(80), np.arange(80), indexing="ij")
    radius = 15.0
    ball = (kk - 19.5) ** 2 + ((jj - 39.5) * 0.5) ** 2 + ((ii - 39.5) * 0.5) ** 2 <= radius**2
    verts, faces = roi_mesh(ball, spacing)
    volume, area = mesh_volume_area(verts, faces)
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.01)
    # marching cubes on a binary mask follows the voxel staircase: its area exceeds the smooth sphere's (+12 % here)
    assert 1.0 < area / (4 * np.pi * radius**2) < 1.15
    affine = np.diag([1.0, 0.5, 0.5, 1.0])
    flat = Volume(np.full(ball.shape, 3.5), affine, "SUVbw")
    assert intensity_peaks(flat, ball) == {"loc_peak_loc": pytest.approx(3.5), "loc_peak_glob": pytest.approx(3.5)}
    # one hot voxel: the 1 ml sphere (radius 6.2 mm) holds it plus the voxels whose centres lie within 6.2 mm
    hot = flat.array.copy()
    hot[20, 40, 40] = 3.5 + 1000.0
    n_sphere = int(((np.arange(-6, 7)[:, None, None] ** 2 + (np.arange(-12, 13)[None, :, None] * 0.5) ** 2
                     + (np.arange(-12, 13)[None, None, :] * 0.5) ** 2) <= (3000 / (4 * np.pi)) ** (2 / 3)).sum())
    peaks = intensity_peaks(flat.with_array(hot), ball)
    assert peaks["loc_peak_loc"] == pytest.approx(3.5 + 1000.0 / n_sphere)
    assert peaks["loc_peak_glob"] == pytest.approx(3.5 + 1000.0 / n_sphere)


def test_fixed_bin_size_discretisation() -> None:
    assert discretise(np.array([-1000.0, -997.6, -997.5, -992.6]), bin_width=2.5).tolist() == [1, 1, 2, 3]
    assert discretise(np.array([3.0, 1.0]), bin_width=1.0, minimum=0.5).tolist() == [3, 1]
    with pytest.raises(ValueError, match="bin_width"):
        discretise(np.array([1.5, 2.0]))
