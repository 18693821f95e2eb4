"""Slide integrity: `fusionrx slide --verify` names the damaged tile (level, level-0 coordinates) of a tiled
TIFF whose JPEG bytes were overwritten, feature extraction over that region fails naming the tile, and the
ingest check (require_intact_slide) refuses the slide."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from flows.cli import main
from flows.stages.pathology import extract_features, plan_slide
from flows.synthetic.slide_writer import write_synthetic_slide
from fusion.errors import SlideError
from imaging.slide_summary import require_intact_slide, verify_slide
from imaging.tile_encoder import TileEncoder

# 1024 px at 0.5 um/px, 256 px JPEG tiles, 3 levels: level 0 4x4 tiles, level 1 (1 um/px) 2x2, level 2 1x1
SIDE, TILE_PX = 1024, 256


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "clean.tif"
    write_synthetic_slide(path, size_px=(SIDE, SIDE), mpp=0.5, levels=3, tile_size=TILE_PX, seed=3,
                          tissue_ellipse=(512, 512, 480, 480), nuclear_density=8.0, nuclear_radius_px=4.0)
    return path


def corrupt_tile(src, dst, page_index: int, tile_index: int, kind: str) -> tuple[int, int]:
    """Copy src to dst with the middle third of one tile's JPEG bytes zeroed or randomised (offsets found with
    tifffile); the tile's top-left at its level (px)."""
    data = bytearray(src.read_bytes())
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[page_index]
        off, n = int(page.dataoffsets[tile_index]), int(page.databytecounts[tile_index])
        across = -(-int(page.imagewidth) // int(page.tilewidth))
        xy = ((tile_index % across) * int(page.tilewidth), (tile_index // across) * int(page.tilelength))
    third = n // 3
    noise = (bytes(third) if kind == "zeros"
             else np.random.default_rng(0).integers(0, 256, third, dtype=np.uint8).tobytes())
    data[off + third : off + 2 * third] = noise
    dst.write_bytes(bytes(data))
    return xy


def test_clean_slide_verifies(clean, capsys):
    report = verify_slide(clean)
    assert report.ok and report.levels == 3
    assert report.tiles_checked == 16 + 4 + 1  # every tile of every level
    assert set(report.decoders) == {"tifffile", "openslide"}
    assert main(["slide", str(clean), "--verify"]) == 0
    assert "21 tiles on 3 levels decoded" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_verify_names_the_damaged_tile(clean, tmp_path, capsys, kind):
    bad = tmp_path / f"bad_{kind}.tif"
    # level 1 (page 1), tile 3 = row 1, col 1: level px (256, 256), level-0 (512, 512)
    assert corrupt_tile(clean, bad, page_index=1, tile_index=3, kind=kind) == (256, 256)
    report = verify_slide(bad)
    assert len(report.damaged) == 1
    tile = report.damaged[0]
    assert (tile.level, tile.index, tile.x, tile.y, tile.x0, tile.y0) == (1, 3, 256, 256, 512, 512)
    # zero-filled JPEG data decodes silently with tifffile; OpenSlide (the extraction's decoder) refuses it
    assert "OpenSlide" in tile.reason
    if kind == "random":
        assert "tifffile" in tile.reason
    assert main(["slide", str(bad), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "1 damaged" in out and "level 1 tile 3 at level-0 (512, 512)" in out
    assert main(["slide", str(bad), "--verify", "--format", "json"]) == 1
    damaged = json.loads(capsys.readouterr().out)["damaged"]
    assert [(d["level"], d["x0"], d["y0"]) for d in damaged] == [(1, 512, 512)]
    with pytest.raises(SlideError, match=r"bad_\w+\.tif: 1 of 21 tiles do not decode: level 1 tile 3 at "
                                         r"level-0 \(512, 512\)"):
        require_intact_slide(bad)


def test_extraction_fails_naming_the_first_damaged_grid_tile(clean, tmp_path):
    bad = tmp_path / "bad.tif"
    corrupt_tile(clean, bad, page_index=1, tile_index=3, kind="zeros")  # level-0 box (512..1024, 512..1024)
    plan = plan_slide("P", clean, tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
    assert plan.grid.level == 1 and plan.grid.tile_size_level0 == 128
    coords = plan.grid.coords_level0
    inside = (coords >= 512).all(axis=1) & (coords < 1024).all(axis=1)
    assert inside.any() and (~inside).any()
    x, y = coords[np.flatnonzero(inside)[0]]  # row-major: the first grid tile that needs the damaged JPEG tile
    bad_plan = dataclasses.replace(plan, path=bad)
    with pytest.raises(SlideError, match=rf"bad\.tif: cannot read the tile at level-0 \({x}, {y}\), level 1 "
                                         r"\(OpenSlideError: .*JPEG"):
        extract_features(bad_plan, TileEncoder(feature_dim=4), tmp_path / "bad.h5")
    assert not list(tmp_path.glob("*.h5"))
    # the tiles before the damaged one are what the clean slide gives (the reader went on strip by strip)
    out = extract_features(plan, TileEncoder(feature_dim=4), tmp_path / "good.h5")
    assert out.exists()


def test_verify_names_a_damaged_strip_of_a_plain_tiff(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=32, compression="zlib",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    assert verify_slide(path).ok and verify_slide(path).tiles_checked == 10  # ceil(300 / 32) strips
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        off, n = int(tif.pages[0].dataoffsets[4]), int(tif.pages[0].databytecounts[4])
    data[off + 4 : off + n - 4] = rng.integers(0, 256, n - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    report = verify_slide(path)
    assert report.decoders == ("tifffile",)
    assert [(d.level, d.index, d.x0, d.y0, d.width, d.height) for d in report.damaged] == [(0, 4, 0, 128, 200, 32)]


def test_run_config_verify_slides_skips_a_damaged_slide_naming_the_tile(clean, tmp_path):
    """The run's verify_slides: the slide's plan task fails with the damaged tile's level and coordinates
    (reported and skipped by the run), and a clean slide plans as usual."""
    from flows.config import RunConfig
    from flows.tasks import plan_slide_task

    cfg = {**RunConfig().to_dict(), "verify_slides": True}
    bad = tmp_path / "bad.tif"
    corrupt_tile(clean, bad, page_index=1, tile_index=3, kind="zeros")
    failed = plan_slide_task.fn("P1", str(bad), {"slide": "x"}, str(tmp_path / "store"), cfg, "run-1")
    message = failed.skipped.error
    assert failed.status == "failed" and "(512, 512)" in message and "level 1" in message, message
    ok = plan_slide_task.fn("P2", str(clean), {"slide": "y"}, str(tmp_path / "store"), cfg, "run-1")
    assert ok.status == "new" and len(ok.value.grid) > 0
