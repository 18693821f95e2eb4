"""Generated slides: a plain (stripped, non-pyramidal) TIFF streams with flat memory and gives the same tiles
as OpenSlide on the pyramidal version; a 40x/20x pair gives the same tissue per tile; a corrupt tile fails
only its slide, also while sampling the tile encoder's training tiles; tiled and stripped plain TIFFs decode
segment by segment to the image written, edges included."""

import tracemalloc

import numpy as np
import pytest
import tifffile

from flows.stages.pathology import extract_features, plan_slide, sample_cohort_tiles
from flows.synthetic.slide_writer import HE_STAIN_OD, render_he
from fusion.errors import SlideError
from imaging.slide import detect_slide_format, open_slide, slide_info
from imaging.slide_reader import PlainTiffSlide
from imaging.tile_encoder import TileEncoder
from imaging.tiling import iter_tiles, read_tile, tile_grid
from imaging.tissue import tissue_mask

MPP40 = 0.25


def _mean2(img: np.ndarray) -> np.ndarray:
    """Independent 2x2 block mean, rounded (how a scanner pyramid's next level is made)."""
    h, w, c = img.shape
    return np.rint(img.reshape(h // 2, 2, w // 2, 2, c).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


def _res(mpp: float) -> dict:
    return {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER", "photometric": "rgb"}


def write_plain(path, img, mpp, rows=16):
    """Stripped deflate TIFF, no tiles, no pyramid: OpenSlide refuses it."""
    tifffile.imwrite(path, img, rowsperstrip=rows, compression="zlib", compressionargs={"level": 1}, **_res(mpp))


def write_pyramid(path, img, mpp, levels):
    """Tiled lossless pyramid that OpenSlide opens as generic-tiff."""
    with tifffile.TiffWriter(path) as tif:
        for i in range(levels):
            img = img if i == 0 else _mean2(img)
            tif.write(img, tile=(256, 256), compression="zlib", compressionargs={"level": 1},
                      subfiletype=0 if i == 0 else 1, **_res(mpp * 2**i))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    scene, _ = render_he(size_px=(2048, 2048), tissue_ellipse=(1024, 1024, 820, 640), tumour_circle=(900, 950, 300),
                         nuclear_density=20.0, nuclear_radius_px=8.0, seed=5, stain_od=HE_STAIN_OD)
    paths = {k: root / f"{k}.tif" for k in ("plain40", "pyramid40", "plain20", "big_plain")}
    write_plain(paths["plain40"], scene, MPP40)
    write_pyramid(paths["pyramid40"], scene, MPP40, levels=4)
    write_plain(paths["plain20"], _mean2(scene), 2 * MPP40)
    write_plain(paths["big_plain"], np.tile(scene, (2, 2, 1)), MPP40, rows=32)  # 4096 x 4096, 48 MiB of pixels
    return scene, paths


def test_plain_tiff_is_read_by_tifffile_and_pyramid_by_openslide(slides):
    _, paths = slides
    assert detect_slide_format(paths["plain40"]) == "plain-tiff"
    assert detect_slide_format(paths["pyramid40"]) == "generic-tiff"
    with open_slide(paths["plain40"]) as slide:
        assert isinstance(slide, PlainTiffSlide)
        assert slide.properties["tiff.streaming"] == "strips"
    info = slide_info(paths["plain40"])
    assert info.mpp == pytest.approx(MPP40) and info.level_dimensions == ((2048, 2048),)


def test_plain_tiff_tiles_equal_openslide_tiles_of_the_pyramid(slides):
    _, paths = slides
    with open_slide(paths["plain40"]) as plain, open_slide(paths["pyramid40"]) as pyr:
        mask, down = tissue_mask(pyr)
        for mpp, tol in ((MPP40, 0), (1.0, 1)):
            g_plain = tile_grid(plain, mask, down, tile_size=64, target_mpp=mpp)
            g_pyr = tile_grid(pyr, mask, down, tile_size=64, target_mpp=mpp)
            assert np.array_equal(g_plain.coords_level0, g_pyr.coords_level0) and len(g_plain) > 20
            # at 1 um: plain reads level 0 and area-averages 4x4; the pyramid reads its 1 um level as is
            assert (g_plain.level, g_pyr.level) == ((0, 0) if mpp == MPP40 else (0, 2))
            every = np.arange(0, len(g_plain), 3)
            a = np.concatenate([t for _, t in iter_tiles(plain, g_plain.subset(every))]).astype(int)
            b = np.concatenate([t for _, t in iter_tiles(pyr, g_pyr.subset(every))]).astype(int)
            assert np.abs(a - b).max() <= tol  # twice-rounded 2x2 means vs one 4x4 mean: one grey level
        # between levels: the nearest finer level (0.5 um) is read and area-downsampled to 0.7 um
        g = tile_grid(pyr, mask, down, tile_size=64, target_mpp=0.7)
        assert (g.level, g.read_size, g.mpp) == (1, round(64 * 0.7 / 0.5), 0.7)
        assert g.tile_size_level0 == round(64 * 0.7 / MPP40)


def test_plain_tiff_streams_with_flat_memory(slides):
    _, paths = slides
    image_bytes = 4096 * 4096 * 3
    with PlainTiffSlide(paths["big_plain"], cache_bytes=4 * 2**20) as slide:
        tracemalloc.start()
        mask, down = tissue_mask(slide, max_side=512)  # a thumbnail streamed in full-width strip bands
        grid = tile_grid(slide, mask, down, tile_size=64, target_mpp=1.0)
        n = sum(len(c) for c, _ in iter_tiles(slide, grid.subset(np.arange(0, len(grid), 4)), batch_size=8))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert mask.shape == (512, 512) and down == pytest.approx(8.0)
    assert n >= 20 and len(grid) > 80
    # measured ~10 MiB here, and ~12 MiB for the 4x smaller 2048 px image: flat in slide size
    assert peak < image_bytes / 4, f"peak {peak / 2**20:.1f} MiB while streaming a {image_bytes / 2**20:.0f} MiB image"


def test_40x_and_20x_give_the_same_tissue_per_tile(slides):
    _, paths = slides
    with open_slide(paths["plain40"]) as s40, open_slide(paths["plain20"]) as s20:
        g40 = tile_grid(s40, *tissue_mask(s40), tile_size=64, target_mpp=1.0)
        g20 = tile_grid(s20, *tissue_mask(s20), tile_size=64, target_mpp=1.0)
        assert (g40.read_size, g20.read_size) == (256, 128)  # both read level 0 and downsample 4x / 2x
        um40 = g40.coords_level0 * MPP40
        um20 = g20.coords_level0 * 2 * MPP40
        assert len(g40) > 20 and np.array_equal(um40, um20)
        a = np.concatenate([t for _, t in iter_tiles(s40, g40)]).astype(int)
        b = np.concatenate([t for _, t in iter_tiles(s20, g20)]).astype(int)
    assert np.abs(a - b).max() <= 1


def _corrupt_level_tile(src, dst, level, tile_index):
    """Copy src to dst with the compressed bytes of one tile of one pyramid level overwritten by noise."""
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[level]
        off, n = int(page.dataoffsets[tile_index]), int(page.databytecounts[tile_index])
    data[off + 8 : off + n - 8] = np.random.default_rng(0).integers(0, 256, n - 16, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def test_a_corrupt_tile_fails_only_its_slide(slides, tmp_path):
    _, paths = slides
    bad = tmp_path / "bad.tif"
    # level 1 (0.5 um/px) is 1024 px = 4 x 4 tiles of 256; tile 9 = row 2, col 1: level-0 (512..1024, 1024..1536)
    _corrupt_level_tile(paths["pyramid40"], bad, level=1, tile_index=9)
    good_plan = plan_slide("P-GOOD", paths["pyramid40"], tile_size=128, target_mpp=0.5, min_tissue=0.5, seed=0)
    bad_plan = plan_slide("P-BAD", bad, tile_size=128, target_mpp=0.5, min_tissue=0.5, seed=0)
    assert bad_plan.grid.level == 1
    logged = []
    tiles = sample_cohort_tiles([good_plan, bad_plan], n=10_000, seed=0, log=logged.append)
    assert len(tiles) == len(good_plan.grid)  # every tile of the good slide, none of the bad one
    assert len(logged) == 1 and "P-BAD" in logged[0] and "bad.tif" in logged[0]
    with pytest.raises(SlideError, match=r"bad\.tif: cannot read the tile at level-0 \((512|768), (1024|1280)\)"):
        extract_features(bad_plan, TileEncoder(feature_dim=4), tmp_path / "bad.h5")
    assert not list(tmp_path.glob("*.h5"))  # no partial feature file left behind
    out = extract_features(good_plan, TileEncoder(feature_dim=4), tmp_path / "good.h5")
    import h5py

    with h5py.File(out) as f:
        assert f["features"].shape == (len(good_plan.grid), 4)
        assert np.array_equal(f["coords_level0"][()], good_plan.grid.coords_level0)
    # a corrupt strip of a plain TIFF (read through tifffile) names the slide and the tile as well
    bad_plain = tmp_path / "bad_plain.tif"
    _corrupt_level_tile(paths["plain40"], bad_plain, level=0, tile_index=1100 // 16)  # rows 1088..1103
    with open_slide(bad_plain) as slide:
        grid = tile_grid(slide, np.ones((2, 2), bool), 1024.0, tile_size=128, target_mpp=1.0, min_tissue=0)
        assert read_tile(slide, grid, 1024, 512).shape == (128, 128, 3)  # rows 512..1023 are intact
        with pytest.raises(SlideError, match=r"bad_plain\.tif: cannot read the tile at level-0 \(1024, 1024\)"):
            read_tile(slide, grid, 1024, 1024)


def test_unstreamable_or_unusable_tiffs_are_named(tmp_path, monkeypatch):
    import imaging.slide_reader as reader

    img = np.full((512, 512, 3), 200, np.uint8)
    one_strip = tmp_path / "one_strip.tif"
    tifffile.imwrite(one_strip, img, rowsperstrip=512, compression="zlib", **_res(0.5))
    monkeypatch.setattr(reader, "MAX_SEGMENT_BYTES", 100_000)  # as a 60k x 60k px single-strip file would be
    with pytest.raises(SlideError, match=r"one_strip\.tif: compressed TIFF stored in segments of .*cannot stream"):
        open_slide(one_strip)
    monkeypatch.undo()
    wide = tmp_path / "uint16.tif"
    tifffile.imwrite(wide, np.zeros((64, 64, 3), np.uint16), rowsperstrip=8, compression="zlib", **_res(0.5))
    with pytest.raises(SlideError, match=r"uint16\.tif: TIFF page is uint16"):
        open_slide(wide)
    raw = tmp_path / "uncompressed.tif"  # contiguous pixels: memory-mapped, nothing decoded
    pattern = np.arange(300 * 200 * 3, dtype=np.uint32).reshape(300, 200, 3).astype(np.uint8)
    tifffile.imwrite(raw, pattern, rowsperstrip=7, **_res(0.5))
    with open_slide(raw) as slide:
        assert slide.properties["tiff.streaming"] == "memmap"
        rgba = np.asarray(slide.read_region((150, 280), 0, (64, 64)))
        assert np.array_equal(rgba[:20, :50, :3], pattern[280:, 150:]) and (rgba[20:, :, 3] == 0).all()
    no_mpp = tmp_path / "no_mpp.tif"
    tifffile.imwrite(no_mpp, img, rowsperstrip=16, compression="zlib", photometric="rgb")
    with open_slide(no_mpp) as slide, pytest.raises(SlideError, match=r"no_mpp\.tif.*mpp-x is absent"):
        tile_grid(slide, np.ones((2, 2), bool), 256.0)


@pytest.mark.parametrize("layout", [{"tile": (64, 48)}, {"rowsperstrip": 24}])
def test_plain_tiff_segments_decode_to_the_image_at_every_edge(tmp_path, layout):
    # 150 x 130 px: neither tiles (64 x 48, stored padded) nor strips (24 rows) divide it; lossless, so every
    # region PlainTiffSlide decodes equals the array written, and outside the image is transparent
    img = np.random.default_rng(7).integers(0, 256, (130, 150, 3), dtype=np.uint8)
    path = tmp_path / "edges.tif"
    tifffile.imwrite(path, img, compression="zlib", **layout, **_res(0.5))
    with PlainTiffSlide(path, cache_bytes=20_000) as slide:  # a small cache: segments are evicted and re-read
        assert slide.properties["tiff.streaming"] == ("tiles" if "tile" in layout else "strips")
        for x, y, w, h in [(0, 0, 150, 130), (100, 90, 80, 60), (63, 47, 3, 3), (-5, 120, 40, 20), (140, 0, 10, 130)]:
            rgba = slide.read_region_rgba((x, y), 0, (w, h))
            x0, y0 = max(x, 0), max(y, 0)
            inside = rgba[y0 - y : min(y + h, 130) - y, x0 - x : min(x + w, 150) - x]
            assert np.array_equal(inside[..., :3], img[y0 : y + h, x0 : x + w]) and (inside[..., 3] == 255).all()
            assert (rgba[..., 3] == 255).sum() == inside[..., 3].size  # everything else transparent
