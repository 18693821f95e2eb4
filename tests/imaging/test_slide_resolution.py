"""Implausible slide resolutions are refused: a TIFF's 72/96 dpi default is not 352.8 um/px of tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from fusion.errors import SlideError
from imaging.slide import open_slide, slide_info, slide_mpp
from imaging.tiling import tile_grid

IMAGE = np.full((250, 300, 3), 200, np.uint8)  # 300 x 250 px


def _tiff(path: Path, resolution: float, unit: str, **kw) -> Path:
    tifffile.imwrite(path, IMAGE, photometric="rgb", resolution=(resolution, resolution), resolutionunit=unit, **kw)
    return path


@pytest.mark.parametrize("dpi", [72, 96])
def test_default_dpi_tiff_is_never_tiled(tmp_path: Path, dpi: int) -> None:
    path = _tiff(tmp_path / f"photo_{dpi}dpi.tif", dpi, "INCH")
    with open_slide(path) as slide:
        with pytest.raises(SlideError, match=rf"photo_{dpi}dpi\.tif.*{25400 / dpi:.6g} um/px.*{dpi} px/inch.*default"):
            slide_mpp(slide)
        with pytest.raises(SlideError, match=rf"photo_{dpi}dpi\.tif"):
            tile_grid(slide, np.ones((250, 300), bool), 1.0, tile_size=224, target_mpp=0.5)
    with pytest.raises(SlideError, match=rf"photo_{dpi}dpi\.tif.*not a slide scan resolution"):
        slide_info(path)


def test_tiled_default_dpi_tiff_through_openslide_is_refused(tmp_path: Path) -> None:
    """OpenSlide's generic-tiff turns 72 dpi into openslide.mpp-x=352.78 itself: refused the same way."""
    path = tmp_path / "tiled_72dpi.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), photometric="rgb", tile=(256, 256),
                     resolution=(72, 72), resolutionunit="INCH")
    with open_slide(path) as slide, pytest.raises(SlideError, match=r"tiled_72dpi\.tif.*352\.778 um/px.*default"):
        slide_mpp(slide)


def test_implausibly_fine_resolution_is_refused(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "too_fine.tif", 1e6, "CENTIMETER")  # 0.01 um/px
    with open_slide(path) as slide, pytest.raises(SlideError, match=r"too_fine\.tif.*0\.01 um/px.*0\.05-100"):
        slide_mpp(slide)


def test_scanner_resolution_still_tiles(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "scan.tif", 2e4, "CENTIMETER")  # 0.5 um/px
    with open_slide(path) as slide:
        assert slide_mpp(slide) == pytest.approx(0.5)
        grid = tile_grid(slide, np.ones((250, 300), bool), 1.0, tile_size=64, target_mpp=1.0)
    assert len(grid) == 2 * 1  # 64 px at 1 um/px = 128 level-0 px: floor(300 / 128) x floor(250 / 128)
