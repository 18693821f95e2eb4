"""Macenko stain estimation and normalisation on scikit-image's real IHC image and a synthetic slide."""

import numpy as np
import pytest
from skimage import data
from skimage.color import rgb_from_hed

from flows.synthetic.slide_writer import render_he, write_synthetic_slide
from imaging.slide import open_slide
from imaging.stain import (
    REFERENCE_MAX_CONCENTRATIONS,
    REFERENCE_STAIN_MATRIX,
    StainNormalizer,
    macenko_stain_matrix,
    od_to_rgb,
    rgb_to_od,
    slide_stain_matrix,
)


@pytest.fixture(scope="module")
def ihc():
    return data.immunohistochemistry()  # 512x512 hematoxylin + DAB, shipped with scikit-image


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_od_round_trip_and_values():
    rgb = np.array([[239, 0, 120]], dtype=np.uint8)
    od = rgb_to_od(rgb, io=240)
    assert od[0, 0] == pytest.approx(0.0)
    assert od[0, 1] == pytest.approx(np.log(240.0))
    assert np.array_equal(od_to_rgb(od, io=240), rgb)


def test_stain_vectors_unit_norm_and_hematoxylin_first(ihc):
    stains, max_c = macenko_stain_matrix(ihc)
    assert stains.shape == (2, 3) and max_c.shape == (2,)
    assert np.linalg.norm(stains, axis=1) == pytest.approx([1.0, 1.0])
    assert stains[0, 0] > stains[1, 0]  # hematoxylin absorbs red more than DAB
    assert (stains > 0).all() and (max_c > 0).all()
    # Ruifrok & Johnston's hematoxylin and DAB OD vectors (scikit-image rgb_from_hed rows 0 and 2)
    assert (cosines(stains, rgb_from_hed[[0, 2]]) > 0.98).all()


def test_normalising_to_reference_recovers_reference(ihc):
    normalizer = StainNormalizer()  # default target: the standard Macenko H&E reference
    assert np.allclose(normalizer.target_stain_matrix, REFERENCE_STAIN_MATRIX)
    out = normalizer.transform(ihc)
    assert out.shape == ihc.shape and out.dtype == np.uint8
    stains, max_c = macenko_stain_matrix(out)
    assert (cosines(stains, REFERENCE_STAIN_MATRIX) > 0.99).all()
    # concentrations were rescaled to the reference 99th percentiles (re-estimation shifts them a little)
    assert max_c[0] == pytest.approx(REFERENCE_MAX_CONCENTRATIONS[0], rel=0.15)
    assert max_c[1] == pytest.approx(REFERENCE_MAX_CONCENTRATIONS[1], rel=0.4)
    # background stays background: the brightest pixels are still near-white
    bright = ihc.sum(-1) > 3 * 225
    assert out[bright].mean() > 215


def test_fit_target_then_transform_batch_recovers_target(ihc):
    # target: a synthetic H&E field (hematoxylin + eosin) while the source is hematoxylin + DAB
    target_img, _ = render_he(size_px=(256, 256), tissue_ellipse=(128, 128, 200, 200), tumour_circle=(128, 128, 90),
                              nuclear_density=40.0, nuclear_radius_px=4.0, seed=1)
    normalizer = StainNormalizer().fit(target_img)
    target, _ = macenko_stain_matrix(target_img)
    assert np.allclose(normalizer.target_stain_matrix, target)
    tiles = ihc.reshape(4, 128, 4, 128, 3).transpose(0, 2, 1, 3, 4).reshape(16, 128, 128, 3)
    normalizer.fit_source(ihc)
    out = normalizer.transform(tiles)  # vectorised over the batch with the image-level source matrix
    assert out.shape == tiles.shape
    stains, _ = macenko_stain_matrix(out)
    assert (cosines(stains, target) > 0.985).all()
    assert cosines(macenko_stain_matrix(ihc)[0], target)[1] < 0.96  # DAB -> eosin: the second stain really moved


def test_slide_stain_matrix_from_streamed_low_res_pixels(tmp_path):
    path = tmp_path / "he.tiff"
    write_synthetic_slide(path, size_px=(1024, 1024), tissue_ellipse=(512, 512, 400, 300),
                          tumour_circle=(450, 500, 200), nuclear_density=30, seed=2, levels=3)
    slide = open_slide(path)
    stains, max_c = slide_stain_matrix(slide)
    slide.close()
    assert np.linalg.norm(stains, axis=1) == pytest.approx([1.0, 1.0])
    hematoxylin = np.array([0.65, 0.70, 0.29])  # the writer's hematoxylin OD vector
    assert cosines(stains[:1], hematoxylin[None])[0] > 0.95
    assert stains[1, 1] == stains[1].max()  # eosin absorbs green most


def test_too_few_stained_pixels_is_an_error():
    white = np.full((32, 32, 3), 235, dtype=np.uint8)
    with pytest.raises(ValueError, match="stained pixels"):
        macenko_stain_matrix(white)
