"""Tiles cut from row strips (one region read per grid row run, no PIL image per tile) are value for value
the tiles read_tile gives one by one, at the same coordinates, on generated pyramids, a plain TIFF and the
real Aperio slide; the batched area resize and the table-driven stain maths equal their per-tile forms."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from flows.synthetic.slide_writer import write_synthetic_slide
from imaging.pixels import area_resize
from imaging.slide import open_slide
from imaging.stain import REFERENCE_STAIN_MATRIX, concentrations, mean_concentrations, rgb_to_od
from imaging.tiling import area_resize_batch, iter_tiles, level_origins, read_tile, strip_runs, tile_grid
from imaging.tissue import tissue_mask
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    path = tmp_path_factory.mktemp("strips") / "p.tif"
    write_synthetic_slide(path, size_px=(2048, 1536), mpp=0.25, levels=3, seed=2, nuclear_density=4.0)
    return path


def _same_as_read_tile(path, tile_size: int, mpp: float, batch: int = 16, min_tissue: float = 0.3) -> str:
    """Assert iter_tiles == read_tile per tile (values and coordinates); 'strips' or 'per-tile' path taken."""
    with open_slide(path) as slide:
        mask, down = tissue_mask(slide)
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=mpp, min_tissue=min_tissue)
        assert len(grid) > 8
        coords, tiles = zip(*iter_tiles(slide, grid, batch_size=batch))
        expected = np.stack([read_tile(slide, grid, int(x), int(y)) for x, y in grid.coords_level0])
        path_taken = "strips" if level_origins(slide, grid.level, grid.coords_level0) is not None else "per-tile"
    assert np.array_equal(np.concatenate(coords), grid.coords_level0)
    got = np.concatenate(tiles)
    assert got.shape == expected.shape and np.array_equal(got, expected)
    return path_taken


@pytest.mark.parametrize("tile_size, mpp, how", [(64, 1.0, "strips"), (64, 0.25, "strips"), (100, 0.7, "strips"),
                                                 (48, 0.6, "per-tile")])
def test_strip_tiles_equal_read_tile_on_a_pyramid(pyramid, tile_size, mpp, how):
    # 1.0 and 0.25 um/px read a level as is; 0.7 and 0.6 read a larger region and area-resize it; at 0.6 the
    # grid step (115.2 level-0 px) puts tiles between level-1 pixels: read one by one, still the same tiles
    assert _same_as_read_tile(pyramid, tile_size, mpp) == how


def test_strip_tiles_equal_read_tile_on_a_plain_tiff(tmp_path):
    rng = np.random.default_rng(0)
    img = np.full((700, 900, 3), 235, np.uint8)
    img[100:650, 80:820] = rng.integers(60, 200, (550, 740, 3), dtype=np.uint8)
    img[100:650, 80:820, 1] //= 2  # stained (saturated) tissue
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=16, compression="zlib",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # 0.5 um/px
    assert _same_as_read_tile(path, 32, 0.5) == "strips"
    assert _same_as_read_tile(path, 40, 0.8) == "strips"


def test_strip_tiles_equal_read_tile_on_the_aperio_slide():
    path = realdata_dir("wsi", "CMU-1-Small-Region.svs")
    assert _same_as_read_tile(path, 64, 1.0, batch=64) == "strips"  # 0.499 um/px: 128 px read, resized
    assert _same_as_read_tile(path, 128, 0.5, batch=64) == "strips"  # read as is


def test_level_origins_and_runs():
    class Pyramid:  # the two attributes level_origins reads, with OpenSlide's x / downsample rule
        level_downsamples = (1.0, 2.5)

    coords = np.array([[0, 0], [5, 0], [10, 0]])
    assert level_origins(Pyramid(), 1, coords).tolist() == [[0, 0], [2, 0], [4, 0]]
    assert level_origins(Pyramid(), 1, coords + [1, 0]) is None  # 0.4 px: OpenSlide would interpolate
    origins = np.array([[0, 0], [64, 0], [192, 0], [400, 0], [464, 0], [0, 64], [64, 64], [3000, 64]])
    # a gap of one tile joins, of more breaks; a new row or more than max_px breaks
    assert strip_runs(origins, 64, max_px=2048) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    assert strip_runs(origins[:3], 64, max_px=200) == [(0, 2), (2, 3)]


@pytest.mark.parametrize("src, dst", [(128, 64), (256, 64), (96, 12), (140, 100), (154, 96), (7, 3), (64, 64)])
def test_area_resize_batch_equals_area_resize(src, dst):
    tiles = np.random.default_rng(src).integers(0, 256, (5, src, src, 3), dtype=np.uint8)
    assert np.array_equal(area_resize_batch(tiles, dst), np.stack([area_resize(t, dst, dst) for t in tiles]))


def test_table_stain_maths_equal_the_formula():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 40, 30, 3), dtype=np.uint8)
    assert np.array_equal(rgb_to_od(rgb), -np.log((rgb.astype(np.float64) + 1.0) / 240.0))
    per_pixel = concentrations(rgb_to_od(rgb.reshape(-1, 3)), REFERENCE_STAIN_MATRIX).reshape(6, -1, 2).mean(1)
    np.testing.assert_allclose(mean_concentrations(rgb, REFERENCE_STAIN_MATRIX), per_pixel, rtol=0, atol=1e-12)
    # by hand: a tile of one colour has that colour's concentrations
    flat = np.broadcast_to(np.array([120, 60, 150], np.uint8), (1, 4, 4, 3))
    one = concentrations(rgb_to_od(np.array([[120, 60, 150]], np.uint8)), REFERENCE_STAIN_MATRIX)
    np.testing.assert_allclose(mean_concentrations(flat, REFERENCE_STAIN_MATRIX), one, atol=1e-12)
