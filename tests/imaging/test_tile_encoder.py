"""Self-supervised tile encoder: loss falls, tumour vs stroma tiles separable, checkpoints and HDF5 round trips.

Slide features come from the pipeline's own stage (``flows.stages.pathology``: ``plan_slide`` then
``extract_features``), read back with ``TileFeatures.load_h5``.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from flows.stages.pathology import extract_features, plan_slide
from flows.synthetic.slide_writer import write_synthetic_slide
from fusion.errors import FusionRxError, SlideError
from imaging.slide import open_slide
from imaging.tile_encoder import (
    TileFeatures,
    fit_tile_encoder,
    save_tile_encoder,
)
from imaging.tiling import iter_tiles, tile_grid
from imaging.tissue import tissue_mask

TUMOUR = (800.0, 1000.0, 500.0)  # cx, cy, r in level-0 px


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsi") / "slide.tiff"
    write_synthetic_slide(path, size_px=(2048, 2048), mpp=0.5, tumour_circle=TUMOUR, nuclear_density=20.0, seed=3)
    slide = open_slide(path)
    mask, down = tissue_mask(slide)
    grid = tile_grid(slide, mask, down, tile_size=64, target_mpp=1.0)
    encoder = fit_tile_encoder(iter_tiles(slide, grid, batch_size=32), feature_dim=16, epochs=8, seed=0)
    slide.close()
    return path, encoder


@pytest.fixture(scope="module")
def extracted(trained, tmp_path_factory):
    """The slide planned (64 px tiles at 1 um/px, own Macenko normaliser) and streamed into a features file."""
    path, encoder = trained
    plan = plan_slide("P-0001", path, tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
    out = extract_features(plan, encoder, tmp_path_factory.mktemp("features") / "slide.h5", batch_size=32)
    return plan, out


def tumour_labels(features: TileFeatures):
    """1 for tiles well inside the tumour, 0 well outside it, None for tiles on its border."""
    centre = features.coords_level0 + features.tile_size_level0 / 2
    dist = np.hypot(centre[:, 0] - TUMOUR[0], centre[:, 1] - TUMOUR[1])
    half_diag = features.tile_size_level0 / np.sqrt(2)
    inside, outside = dist < TUMOUR[2] - half_diag, dist > TUMOUR[2] + half_diag
    return inside, outside


def test_self_supervised_loss_falls(trained):
    _, encoder = trained
    losses = encoder.loss_history
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]


def test_tumour_and_stroma_tiles_are_linearly_separable(extracted):
    _, out = extracted
    feats = TileFeatures.load_h5(out)
    assert feats.features.shape == (len(feats), 16) and feats.features.dtype == np.float32
    assert feats.tile_size_level0 == 128 and feats.mpp == pytest.approx(1.0) and feats.level == 1
    inside, outside = tumour_labels(feats)
    assert inside.sum() >= 15 and outside.sum() >= 15
    x = feats.features[inside | outside]
    y = inside[inside | outside].astype(int)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=cv, method="predict_proba")[:, 1]
    assert roc_auc_score(y, p) > 0.9


def test_streamed_features_equal_one_pass_and_round_trip(trained, extracted, tmp_path):
    path, encoder = trained
    plan, out = extracted
    feats = TileFeatures.load_h5(out)
    assert not list(out.parent.glob("*.part.h5"))  # written to a temp file, then renamed
    # batch-by-batch streaming gives the features of one pass over every normalised tile of the slide
    with open_slide(path) as slide:
        (coords, tiles), = iter_tiles(slide, plan.grid, batch_size=len(plan.grid))
    one_pass = encoder.encode(plan.normalizer.transform(tiles), batch_size=len(tiles))
    np.testing.assert_allclose(feats.features, one_pass, rtol=1e-5, atol=1e-5)
    assert np.array_equal(feats.coords_level0, plan.grid.coords_level0) and np.array_equal(coords, feats.coords_level0)
    assert (feats.tile_size_level0, feats.mpp, feats.slide_path, feats.level, feats.tile_size) == (
        plan.grid.tile_size_level0, pytest.approx(plan.grid.mpp), str(path), plan.grid.level, plan.grid.tile_size)
    copy = tmp_path / "feats.h5"
    feats.save_h5(copy)
    assert not (tmp_path / "feats.h5.tmp").exists()
    back = TileFeatures.load_h5(copy)
    assert np.array_equal(back.features, feats.features)
    assert np.array_equal(back.coords_level0, feats.coords_level0)
    assert (back.tile_size_level0, back.mpp, back.slide_path, back.level, back.tile_size) == (
        feats.tile_size_level0, feats.mpp, feats.slide_path, feats.level, feats.tile_size)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(SlideError, match="bad.h5"):
        TileFeatures.load_h5(bad)


def test_checkpoint_loads_instead_of_training(trained, tmp_path):
    path, encoder = trained
    ckpt = tmp_path / "tile_encoder.pt"
    save_tile_encoder(encoder, ckpt)
    loaded = fit_tile_encoder(np.zeros((0, 64, 64, 3), np.uint8), feature_dim=16, checkpoint=str(ckpt))
    slide = open_slide(path)
    mask, down = tissue_mask(slide)
    _, tiles = next(iter_tiles(slide, tile_grid(slide, mask, down, tile_size=64), batch_size=8))
    slide.close()
    assert np.allclose(loaded.encode(tiles), encoder.encode(tiles), atol=1e-5)
    assert loaded.loss_history == encoder.loss_history
    with pytest.raises(FusionRxError, match="feature_dim"):
        fit_tile_encoder(None, feature_dim=8, checkpoint=str(ckpt))
    with pytest.raises(FusionRxError, match="missing.pt"):
        fit_tile_encoder(None, checkpoint=str(tmp_path / "missing.pt"))


def test_training_is_seeded():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    a = fit_tile_encoder(tiles, feature_dim=8, epochs=1, seed=5, batch_size=8)
    b = fit_tile_encoder(tiles, feature_dim=8, epochs=1, seed=5, batch_size=8)
    assert np.allclose(a.encode(tiles), b.encode(tiles))
    assert a.loss_history == b.loss_history


def test_slide_without_tissue_is_an_error(tmp_path):
    path = tmp_path / "empty.tiff"
    write_synthetic_slide(path, size_px=(512, 512), tissue_ellipse=(-5000, -5000, 10, 10),
                          tumour_circle=(-5000, -5000, 5), levels=2)
    with pytest.raises(SlideError, match="empty.tiff.*no tile"):
        plan_slide("P-EMPTY", path, tile_size=128, target_mpp=1.0, min_tissue=0.5, seed=0)
