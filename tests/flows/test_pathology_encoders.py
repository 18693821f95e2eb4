"""The pathology stage with a pretrained timm encoder on the real Aperio slide: features equal timm's own
forward on the same stain-normalised tiles, and the feature file names the encoder and its weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flows.stages.pathology import extract_features, plan_slide
from imaging.pretrained_encoder import TileEncoderSpec, _import_timm, load_encoder
from imaging.slide import open_slide
from imaging.tiling import iter_tiles
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def timm():
    try:
        return _import_timm()
    except ImportError:
        pytest.skip("timm is not installed (make setup installs it)")


def test_pipeline_features_equal_timm_forward_on_the_same_tiles(tmp_path: Path, timm) -> None:
    slide = realdata_dir("wsi", "CMU-1-Small-Region.svs")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    weights = tmp_path / "resnet10t.pth"
    torch.save(model.state_dict(), weights)
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": str(weights),
                                        "tile_px": 64, "mpp": 4.0})
    embedder = load_encoder(spec)
    plan = plan_slide("STS_001", slide, embedder.tile_px, embedder.mpp, 0.5, seed=0)
    out = extract_features(plan, embedder, tmp_path / "STS_001.h5")
    with h5py.File(out, "r") as f:
        feats, coords, attrs = f["features"][()], f["coords"][()], dict(f.attrs)
    assert attrs["encoder"] == "timm:resnet10t"
    assert attrs["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (attrs["encoder_tile_px"], attrs["encoder_mpp"]) == (64, 4.0)
    assert len(feats) == len(plan.grid) > 4 and np.array_equal(coords, plan.grid.coords_level0)
    with open_slide(slide) as s:
        tiles = np.concatenate([plan.normalizer.transform(t) for _, t in iter_tiles(s, plan.grid, batch_size=64)])
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = model((x - mean) / std).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_a_missing_weights_file_is_an_error_naming_it(tmp_path: Path) -> None:
    from fusion.errors import TileEncoderError

    missing = tmp_path / "uni.safetensors"
    with pytest.raises(TileEncoderError, match="uni.safetensors"):
        load_encoder(TileEncoderSpec.from_config({"kind": "timm", "model": "vit_small_patch16_224",
                                                  "weights": str(missing)}))


def test_the_run_keys_features_by_encoder_and_loads_weights_only_to_encode(tmp_path, timm, prefect_harness,
                                                                          monkeypatch) -> None:
    """`run` with a pretrained encoder: the feature file names it; a rerun with current slides never loads the
    weights; another encoder re-encodes the slide (a store never mixes two encoders' features)."""
    import shutil

    import imaging.pretrained_encoder as pe
    from flows.pipeline import run_pipeline

    site = tmp_path / "site"
    (site / "pathology").mkdir(parents=True)
    shutil.copy(realdata_dir("wsi", "CMU-1-Small-Region.svs"), site / "pathology" / "STS_001.svs")
    (site / "catalog.yaml").write_text("version: 1\ncohort: slides\nroot: .\nsources:\n  wsi:\n    modality: wsi\n"
                                       "    format: openslide\n    path: pathology\n")
    torch.manual_seed(0)
    weights = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), weights)
    timm_cfg = tmp_path / "timm.yaml"
    timm_cfg.write_text(f"tile_encoder: {{kind: timm, model: resnet10t, weights: {weights}, tile_px: 64, mpp: 4.0}}\n"
                        "tile_encoder_epochs: 1\nencoder_tiles_per_slide: 8\n")
    store = tmp_path / "store"

    def pathology(summary: dict) -> dict:
        return next(r for r in summary["counts"] if r["stage"] == "pathology")

    first = run_pipeline(site / "catalog.yaml", store, config_path=timm_cfg, verbosity="quiet")
    assert pathology(first)["new"] == 1
    with h5py.File(store / "wsi" / "STS_001.h5", "r") as f:
        assert f.attrs["encoder"] == "timm:resnet10t" and f["features"].shape[1] == 512
        assert f.attrs["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()

    def no_loading(*a, **k):
        raise AssertionError("the weights were loaded for a slide whose features are current")

    monkeypatch.setattr(pe, "load_encoder", no_loading)
    again = run_pipeline(site / "catalog.yaml", store, config_path=timm_cfg, verbosity="quiet")
    assert pathology(again)["reused"] == 1 and pathology(again)["new"] + pathology(again)["changed"] == 0
    monkeypatch.undo()  # the shipped builtin encoder is loaded to encode the slide again
    builtin_cfg = tmp_path / "builtin.yaml"
    builtin_cfg.write_text("tile_encoder_epochs: 1\nencoder_tiles_per_slide: 8\n")
    other = run_pipeline(site / "catalog.yaml", store, config_path=builtin_cfg, verbosity="quiet")
    assert pathology(other)["changed"] == 1
    with h5py.File(store / "wsi" / "STS_001.h5", "r") as f:
        assert f.attrs["encoder"] == "builtin" and f["features"].shape[1] == 32
