"""Tissue mask area, tile selection, point-to-tile lookup and streaming reads on a synthetic slide."""

import numpy as np
import pytest

from flows.synthetic.slide_writer import write_synthetic_slide
from imaging.slide import open_slide
from imaging.tiling import TileGrid, iter_tiles, tile_grid, tile_index_at, tissue_fraction
from imaging.tissue import tissue_mask

ELLIPSE = (1000.0, 1100.0, 700.0, 450.0)  # cx, cy, rx, ry in level-0 px


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsi") / "slide.tiff"
    write_synthetic_slide(
        path, size_px=(2048, 2048), mpp=0.5, tissue_ellipse=ELLIPSE, tumour_circle=(900, 1000, 250), seed=11
    )
    s = open_slide(path)
    yield s
    s.close()


def in_ellipse(x, y, margin=0.0):
    cx, cy, rx, ry = ELLIPSE
    return ((x - cx) / (rx - margin)) ** 2 + ((y - cy) / (ry - margin)) ** 2 <= 1.0


def test_tissue_mask_area_matches_planted_ellipse(slide):
    mask, down = tissue_mask(slide)
    assert mask.shape == (256, 256) and down == pytest.approx(8.0)
    area0 = mask.sum() * down**2
    planted = np.pi * ELLIPSE[2] * ELLIPSE[3]
    assert abs(area0 - planted) / planted < 0.10
    # and in the right place: mask pixel centres agree with the ellipse almost everywhere
    ys, xs = np.mgrid[0:256, 0:256]
    truth = in_ellipse((xs + 0.5) * down, (ys + 0.5) * down)
    assert (mask == truth).mean() > 0.98


def test_tissue_mask_at_finer_level(slide):
    mask, down = tissue_mask(slide, level=2)
    assert mask.shape == (512, 512) and down == pytest.approx(4.0)
    planted = np.pi * ELLIPSE[2] * ELLIPSE[3]
    assert abs(mask.sum() * down**2 - planted) / planted < 0.05


def test_tissue_fraction_by_hand():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True  # top-left quarter
    coords = np.array([[0, 0], [16, 0], [0, 16], [8, 8]])
    frac = tissue_fraction(mask, 8.0, coords, 16)
    assert frac == pytest.approx([1.0, 0.0, 0.0, 0.25])


def test_tiles_only_on_tissue_at_level_closest_to_target_mpp(slide):
    mask, down = tissue_mask(slide)
    grid = tile_grid(slide, mask, down, tile_size=128, target_mpp=1.0, min_tissue=0.5)
    assert grid.level == 1 and grid.mpp == pytest.approx(1.0) and grid.tile_size_level0 == 256
    assert len(grid) > 10
    centres = grid.coords_level0 + grid.tile_size_level0 / 2
    # every tile centre lies in the ellipse (a tile with >= 50% tissue has its centre close to tissue)
    assert in_ellipse(centres[:, 0], centres[:, 1], margin=-64).all()
    # tiles fully inside the ellipse are all kept
    xs = np.arange(0, 2048 - 255, 256)
    gx, gy = np.meshgrid(xs, xs)
    corners = [(gx, gy), (gx + 256, gy), (gx, gy + 256), (gx + 256, gy + 256)]
    inside = np.logical_and.reduce([in_ellipse(cx, cy, margin=20) for cx, cy in corners])
    kept = {tuple(c) for c in grid.coords_level0}
    assert all((x, y) in kept for x, y in zip(gx[inside], gy[inside]))
    # 2.0 um/px picks level 2; 0.4 picks level 0
    assert tile_grid(slide, mask, down, target_mpp=2.0).level == 2
    assert tile_grid(slide, mask, down, target_mpp=0.4).level == 0


def test_tile_index_at_maps_points_to_their_tile(slide):
    mask, down = tissue_mask(slide)
    grid = tile_grid(slide, mask, down, tile_size=128, target_mpp=1.0)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(grid), 10, replace=False)
    offsets = rng.uniform(0, grid.tile_size_level0, (10, 2))
    points = grid.coords_level0[pick] + offsets
    outside = np.array([[5.0, 5.0], [2047.0, 10.0], [-3.0, 900.0], [5000.0, 5000.0]])
    idx = tile_index_at(np.vstack([points, outside]), grid)
    assert list(idx[:10]) == list(pick)
    assert list(idx[10:]) == [-1, -1, -1, -1]
    # a non-lattice grid takes the general path and agrees
    row_odd = (grid.coords_level0[:, 1] // grid.tile_size_level0) % 2
    shift = np.column_stack([3 * row_odd, np.zeros_like(row_odd)])  # odd rows move right: no common lattice
    shifted = TileGrid(grid.coords_level0 + shift, grid.tile_size_level0, grid.level, grid.tile_size, grid.mpp)
    pts = shifted.coords_level0[pick] + 1.0
    assert list(tile_index_at(pts, shifted)) == list(pick)


def test_streaming_iterator_counts_and_shapes(slide):
    mask, down = tissue_mask(slide)
    grid = tile_grid(slide, mask, down, tile_size=64, target_mpp=1.0)
    batches = list(iter_tiles(slide, grid, batch_size=16))
    assert sum(len(c) for c, _ in batches) == len(grid)
    assert all(t.shape == (len(c), 64, 64, 3) and t.dtype == np.uint8 for c, t in batches)
    assert all(len(c) == 16 for c, _ in batches[:-1])
    coords = np.concatenate([c for c, _ in batches])
    assert np.array_equal(coords, grid.coords_level0)
    # tissue tiles are stained, not glass
    tiles = np.concatenate([t for _, t in batches])
    assert (tiles.reshape(len(tiles), -1, 3).mean(1)[:, 1] < 200).all()
