"""The real Aperio slide CMU-1-Small-Region.svs (2220 x 2967 px, one level, 0.499 um/px): metadata, micron
tile grids at 0.5 and 1.0 um/px checked against a hand computation, and 1.0 um tiles against an independent
area average of the 0.5 um pixels."""

import numpy as np
import pytest

from imaging.slide import detect_slide_format, open_slide, slide_info
from imaging.tiling import read_tile, tile_grid
from imaging.tissue import tissue_mask
from tests.realdata import realdata_dir

W, H, MPP = 2220, 2967, 0.499


@pytest.fixture(scope="module")
def svs():
    path = realdata_dir() / "wsi" / "CMU-1-Small-Region.svs"
    with open_slide(path) as slide:
        yield path, slide


def test_aperio_metadata(svs):
    path, _ = svs
    info = slide_info(path)
    assert detect_slide_format(path) == "aperio"
    assert info.vendor == "aperio" and info.objective_power == 20
    assert info.level_dimensions == ((W, H),) and info.level_downsamples == (1.0,)
    assert info.mpp == pytest.approx(MPP)


def area_weights(n_out: int, n_in: int) -> np.ndarray:
    """Independent area-averaging matrix [n_out, n_in]: overlap of each output pixel's span with each input px."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        for j in range(int(np.floor(edges[i])), min(int(np.ceil(edges[i + 1])), n_in)):
            w[i, j] = min(edges[i + 1], j + 1) - max(edges[i], j)
    return w / scale


def test_grid_counts_by_hand(svs):
    _, slide = svs
    everywhere = np.ones((4, 4), dtype=bool)  # mask px of 1000 level-0 px: all tissue
    # 0.5 um/px is within 2% of 0.499: level 0 is read as is, 256 px tiles every 256 level-0 px
    g05 = tile_grid(slide, everywhere, 1000.0, tile_size=256, target_mpp=0.5, min_tissue=0.0)
    assert (g05.level, g05.read_size, g05.tile_size_level0) == (0, 256, 256)
    assert len(g05) == (2220 // 256) * (2967 // 256) == 8 * 11
    assert g05.mpp == pytest.approx(MPP)
    # 1.0 um/px: 256 um tiles = 256 / 0.499 = 513.03 level-0 px -> 4 x 5 tiles, read 513 px and area-resized
    g10 = tile_grid(slide, everywhere, 1000.0, tile_size=256, target_mpp=1.0, min_tissue=0.0)
    step = 256 * 1.0 / MPP
    assert (g10.level, g10.read_size, g10.tile_size_level0) == (0, 513, 513)
    assert len(g10) == int(W // step) * int(H // step) == 4 * 5
    assert sorted(set(g10.coords_level0[:, 0])) == [0, 513, 1026, 1539]  # round(i * 513.03)
    assert g10.tile_um == pytest.approx(256.0)
    # the same with tile_um
    assert len(tile_grid(slide, everywhere, 1000.0, tile_um=256, target_mpp=1.0, min_tissue=0.0)) == 20


def test_one_micron_tile_is_the_area_average_of_the_half_micron_pixels(svs):
    _, slide = svs
    everywhere = np.ones((4, 4), dtype=bool)  # mask px of 1000 level-0 px: all tissue
    g10 = tile_grid(slide, everywhere, 1000.0, tile_size=256, target_mpp=1.0, min_tissue=0.0)
    g05 = tile_grid(slide, everywhere, 1000.0, tile_size=256, target_mpp=0.5, min_tissue=0.0)
    x, y = 1026, 1539  # a tissue-rich tile near the centre
    tile = read_tile(slide, g10, x, y).astype(np.float64)
    # independent: raw 0.499 um pixels of the same 513 px box, exact area weights in numpy
    raw = np.asarray(slide.read_region((x, y), 0, (513, 513)))[..., :3].astype(np.float64)
    w = area_weights(256, 513)
    expected = np.stack([w @ raw[..., c] @ w.T for c in range(3)], axis=-1)
    assert np.abs(tile - expected).max() <= 1.0
    assert raw.std() > 20  # tissue, not blank glass
    # and the 2x2 mean of the four 0.5 um tiles that cover the box (512 vs 513 px: within a pixel)
    top = np.concatenate([read_tile(slide, g05, x, y), read_tile(slide, g05, x + 256, y)], axis=1)
    bottom = np.concatenate([read_tile(slide, g05, x, y + 256), read_tile(slide, g05, x + 256, y + 256)], axis=1)
    quad = np.concatenate([top, bottom], axis=0).astype(np.float64)
    pooled = quad.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    shifted = np.asarray(slide.read_region((x + 8, y + 8), 0, (512, 512)))[..., :3].astype(np.float64)
    shifted = shifted.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    # 512 px at 0.499 um vs 513.03: the two drift apart by up to half an output pixel towards the far corner,
    # so the near quarter agrees closely and the whole tile far better than a 4 um misplacement
    err = np.abs(tile - pooled)
    assert err[:128, :128].mean() < 6.0
    assert err.mean() < 0.3 * np.abs(tile - shifted).mean()


def test_tissue_tiles_on_the_real_slide(svs):
    _, slide = svs
    mask, down = tissue_mask(slide)
    assert max(mask.shape) <= 1024 and down == pytest.approx(H / 1024)
    frac = mask.mean()
    assert 0.2 < frac < 0.95  # the small region is mostly tissue, with some glass
    g10 = tile_grid(slide, mask, down, tile_size=256, target_mpp=1.0, min_tissue=0.5)
    assert 5 <= len(g10) <= 20
    tiles = np.stack([read_tile(slide, g10, x, y) for x, y in g10.coords_level0[:3]])
    assert tiles.shape == (3, 256, 256, 3) and tiles.mean() < 220  # stained, not glass
