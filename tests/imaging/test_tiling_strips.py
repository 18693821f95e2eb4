"""Tiles cut from row strips (one region read per grid row run, no PIL image per tile) are value for value
the tiles read_tile gives one by one, at the same coordinates, on generated pyramids, a plain TIFF and the
real Aperio slide; the batched area resize and the table-driven stain maths equal their per-tile forms; the
reader thread (prefetch) keeps the grid order, bounds its read-ahead and raises the reader's error."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from flows.synthetic.slide_writer import write_synthetic_slide
from fusion.errors import SlideError
from imaging.pixels import area_resize
from imaging.slide import open_slide
from imaging.stain import REFERENCE_STAIN_MATRIX, concentrations, mean_concentrations, rgb_to_od
from imaging.tiling import (
    area_resize_batch, iter_tiles, level_origins, prefetch, read_tile, strip_runs, tile_grid,
)
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


def test_prefetch_keeps_order_bounds_read_ahead_and_stops_its_thread():
    made, closed = [], []

    def source(n):
        try:
            for i in range(n):
                made.append(i)
                yield i
        finally:
            closed.append(True)

    assert list(prefetch(source(50), depth=2)) == list(range(50))
    made.clear()
    closed.clear()
    for i in prefetch(source(50), depth=2):
        if i == 3:
            break  # the consumer stops early: the thread is told to stop and joined before the loop goes on
    assert closed == [True] and len(made) <= 4 + 2 + 1  # read ahead at most depth (+ one in hand)
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]
    assert list(prefetch(source(5), depth=0)) == list(range(5))  # depth 0: the calling thread


class _SlideFailingAt:
    """An in-memory slide (read_region_rgba interface) whose region reads fail over one level-0 column."""

    _filename = "/scans/broken.svs"
    level_downsamples = (1.0,)

    def __init__(self, bad_x: int, bad_y: int):
        self.bad = (bad_x, bad_y)

    def read_region_rgba(self, location, level, size):
        (x, y), (w, h) = location, size
        if x <= self.bad[0] < x + w and y <= self.bad[1] < y + h:
            raise OSError("Corrupt JPEG data: premature end of data segment")
        px = np.zeros((h, w, 4), np.uint8)
        px[..., 0] = (np.arange(x, x + w) // 32)[None, :]  # tile column, so order is visible in the pixels
        px[..., 1] = y // 32
        px[..., 3] = 255
        return px

    def read_region(self, location, level, size):
        from PIL import Image

        return Image.fromarray(self.read_region_rgba(location, level, size), mode="RGBA")


def test_iter_tiles_reader_thread_delivers_in_order_and_names_the_damaged_tile():
    from imaging.tiling import TileGrid

    coords = np.array([(x, y) for y in (0, 32, 64) for x in range(0, 256, 32)], dtype=np.int64)
    grid = TileGrid(coords_level0=coords, tile_size_level0=32, level=0, tile_size=32, mpp=1.0)
    got, seen = [], []
    with pytest.raises(SlideError, match=r"/scans/broken\.svs: cannot read the tile at level-0 \(160, 64\), "
                                         r"level 0 \(OSError: Corrupt JPEG"):
        for c, tiles in iter_tiles(_SlideFailingAt(170, 70), grid, batch_size=4):
            seen.append(c)
            got.append(tiles)
    # every batch before the damaged tile's arrived, in grid order, with its own pixels: 16 tiles of rows 0
    # and 32, then row 64 up to the batch holding (160, 64) (tiles 16..19 arrive, 20..23 do not)
    seen, got = np.concatenate(seen), np.concatenate(got)
    assert np.array_equal(seen, coords[:20])
    assert np.array_equal(got[:, 0, 0, :2], coords[:20] // 32)
    assert not [t for t in threading.enumerate() if t.name == "iter_tiles"]
