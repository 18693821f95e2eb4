"""3D SE-CNN autoencoder: patch cropping through the affine, falling loss, embedding that tracks tumour size."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import cross_val_score

from imaging.volume import Volume
from imaging.volume_encoder import (
    SEBlock3d,
    SECNN3d,
    VolumeAutoencoder,
    crop_patch,
    embed_volumes,
    fit_volume_autoencoder,
)

PATCH_VOX, PATCH_MM = 16, 2.0


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny 3D convolutions are dominated by thread sync on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ct_volume(radius_mm: float, centre_mm: np.ndarray, rng: np.random.Generator) -> Volume:
    """Lung-like CT (3 x 1.5 x 1.5 mm voxels) with a soft-tissue sphere, in HU."""
    shape = (14, 30, 30)
    affine = np.array([[0, 0, 1.5, -22.0], [0, 1.5, 0, -22.0], [3.0, 0, 0, -20.0], [0, 0, 0, 1]])
    vol = Volume(np.zeros(shape), affine, "HU")
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    dist = np.linalg.norm(vol.world_coords(idx) - centre_mm, axis=-1)
    hu = np.where(dist <= radius_mm, 40.0, -850.0) + rng.normal(0, 20.0, size=shape)
    return vol.with_array(hu)


def test_crop_patch_samples_world_grid() -> None:
    affine = np.array([[0, 0, 1.5, -22.0], [0, 1.2, 0, -18.0], [3.0, 0, 0, -20.0], [0, 0, 0, 1]])
    vol = Volume(np.zeros((16, 32, 32)), affine, "HU")
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in vol.shape), indexing="ij"), axis=-1)
    xyz = vol.world_coords(idx)
    ramp = vol.with_array(xyz[..., 0] + 10 * xyz[..., 1] + 100 * xyz[..., 2])  # exact under trilinear sampling
    centre = np.array([1.0, -2.0, 3.0])
    patch = crop_patch(ramp, centre, size_vox=8, spacing_mm=2.0)
    assert patch.shape == (8, 8, 8)
    off = (np.arange(8) - 3.5) * 2.0
    z, y, x = np.meshgrid(off + 3.0, off - 2.0, off + 1.0, indexing="ij")
    assert np.allclose(patch, x + 10 * y + 100 * z, atol=1e-2)
    # Far outside the volume: the fill (default the volume minimum).
    assert np.all(crop_patch(ramp, centre + 1000.0, size_vox=4) == ramp.array.min())
    with pytest.raises(ValueError, match="centre_mm"):
        crop_patch(ramp, np.array([np.nan, 0.0, 0.0]))


def test_shapes_and_se_gate() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 2, 16, 16, 16)
    se = SEBlock3d(8)
    feats = torch.randn(3, 8, 4, 4, 4)
    gated = se(feats)
    ratio = gated / feats
    # One gate per (sample, channel), in (0, 1).
    assert torch.allclose(ratio, ratio[..., :1, :1, :1].expand_as(ratio), atol=1e-5)
    assert torch.all((ratio > 0) & (ratio < 1))
    assert SECNN3d(2, 12)(x).shape == (3, 12)
    recon, z = VolumeAutoencoder(2, 12, 16)(x)
    assert recon.shape == x.shape and z.shape == (3, 12)
    with pytest.raises(ValueError, match="divisible"):
        VolumeAutoencoder(1, 8, 20)


def test_autoencoder_learns_tumour_size() -> None:
    rng = np.random.default_rng(0)
    n = 48
    radii = rng.uniform(3.0, 12.0, size=n)
    patches = []
    for r in radii:
        centre = rng.uniform(-3.0, 3.0, size=3)
        vol = _ct_volume(r, centre, rng)
        # The caller's centre estimate is off by up to 2 mm, as a segmentation centroid would be.
        patches.append(crop_patch(vol, centre + rng.uniform(-2, 2, size=3), PATCH_VOX, PATCH_MM))
    x = np.stack(patches)[:, None]
    assert x.shape == (n, 1, PATCH_VOX, PATCH_VOX, PATCH_VOX)

    history: list[float] = []
    encoder = fit_volume_autoencoder(x, embed_dim=8, epochs=15, seed=0, device="cpu", history=history)
    assert len(history) == 15
    assert history[-1] < 0.4 * history[0]
    assert torch.allclose(encoder.input_mean, torch.tensor([x.mean()]), rtol=1e-3)

    z = embed_volumes(encoder, x)
    assert z.shape == (n, 8) and np.all(np.isfinite(z))
    assert np.array_equal(z, embed_volumes(encoder, x))  # eval mode: deterministic
    r2 = cross_val_score(RidgeCV(alphas=np.logspace(-3, 3, 13)), z, radii, cv=4, scoring="r2").mean()
    assert r2 > 0.9
    big = radii > np.median(radii)
    acc = cross_val_score(LogisticRegression(max_iter=5000), z, big, cv=4).mean()
    assert acc > 0.85
    # Same seed, same encoder (short runs); another seed, another one.
    a, b, c = (fit_volume_autoencoder(x, embed_dim=8, epochs=2, seed=s, device="cpu") for s in (0, 0, 1))
    assert np.allclose(embed_volumes(a, x), embed_volumes(b, x), atol=1e-5)
    assert not np.allclose(embed_volumes(a, x), embed_volumes(c, x), atol=1e-3)


def test_embed_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="patches must be"):
        embed_volumes(SECNN3d(2, 4), np.zeros((1, 1, 8, 8, 8), dtype=np.float32))
