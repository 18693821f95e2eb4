"""Synthetic pyramidal TIFF opened through imaging.slide: levels, dimensions, mpp, colours and clear errors."""

import numpy as np
import pytest

from flows.synthetic.slide_writer import BACKGROUND_RGB, write_synthetic_slide
from fusion.errors import FusionRxError, SlideError
from imaging.slide import SlideInfo, open_slide, slide_info, slide_mpp


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsi") / "slide.tiff"
    truth = write_synthetic_slide(
        path, size_px=(2048, 1536), mpp=0.5, tissue_ellipse=(1024, 768, 700, 500),
        tumour_circle=(900, 700, 250), nuclear_density=25.0, nuclear_radius_px=5.0, seed=7,
    )
    return path, truth


def test_opens_at_every_level_with_expected_dims_and_mpp(slide_file):
    path, truth = slide_file
    slide = open_slide(path)
    info = SlideInfo.from_slide(slide, path)
    assert info.vendor == "generic-tiff"
    assert info.level_count == 4
    assert info.level_dimensions == ((2048, 1536), (1024, 768), (512, 384), (256, 192))
    assert info.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 8.0))
    assert info.mpp == pytest.approx(0.5, rel=1e-6)
    assert slide_mpp(slide) == pytest.approx(0.5, rel=1e-6)
    assert [tuple(d) for d in truth["level_dimensions"]] == list(info.level_dimensions)
    assert slide_info(path) == info
    slide.close()


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_read_region_returns_planted_colours(slide_file, level):
    path, _ = slide_file
    slide = open_slide(path)
    down = 2**level
    size = max(8, 64 // down)
    # corner glass: background grey; ellipse centre (stroma, outside the tumour): eosin pink
    glass = np.asarray(slide.read_region((0, 0), level, (size, size)))[..., :3].reshape(-1, 3).astype(float)
    stroma = np.asarray(slide.read_region((1024 + 400, 768 + 150), level, (size, size)))[..., :3]
    stroma = stroma.reshape(-1, 3).astype(float)
    slide.close()
    assert np.abs(glass.mean(0) - BACKGROUND_RGB).max() < 4
    r, g, b = np.median(stroma, axis=0)
    assert g < r - 40 and g < b - 20  # eosin absorbs green: pink/magenta
    assert r > 180


def test_garbage_file_raises_slide_error_naming_path(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"this is not a slide" * 100)
    with pytest.raises(SlideError, match="broken.svs"):
        open_slide(bad)


def test_truncated_tiff_raises_slide_error(tmp_path, slide_file):
    path, _ = slide_file
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(SlideError, match="cut.tiff"):
        open_slide(cut)


def test_missing_file_raises_slide_error_naming_path(tmp_path):
    missing = tmp_path / "nowhere.tiff"
    with pytest.raises(SlideError, match="nowhere.tiff.*does not exist"):
        open_slide(missing)
    assert issubclass(SlideError, FusionRxError)


def test_writer_is_deterministic(tmp_path):
    kw = dict(size_px=(512, 512), tissue_ellipse=(256, 256, 200, 150), tumour_circle=(256, 256, 80), seed=3, levels=2)
    a = write_synthetic_slide(tmp_path / "a.tiff", **kw)
    b = write_synthetic_slide(tmp_path / "b.tiff", **kw)
    assert (tmp_path / "a.tiff").read_bytes() == (tmp_path / "b.tiff").read_bytes()
    assert a["n_nuclei_tumour"] == b["n_nuclei_tumour"] > 0
    assert not (tmp_path / "a.tiff.tmp").exists()
