"""Pretrained tile encoders: specs from config, timm and callable networks loaded only from local weights and
matching timm's own forward, clear errors for missing or mismatched weights, CLAM HDF5 round trips."""

import hashlib
import socket

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from fusion.errors import FeatureFileError, FusionRxError, TileEncoderError
from imaging.pretrained_encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TileEmbedder,
    TileEncoderSpec,
    _import_timm,
    load_encoder,
    read_clam_h5,
    read_state_dict,
    write_clam_h5,
)

try:
    timm = _import_timm()
except TileEncoderError:  # timm not installed: the timm cases are skipped, the rest still run
    timm = None
needs_timm = pytest.mark.skipif(timm is None, reason="timm is not installed")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_tiles(n: int, px: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, px, px, 3), dtype=np.uint8)


def normalised(tiles: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    x = torch.as_tensor(tiles).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def timm_model(name: str, seed: int = 0, **kwargs) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=False, **kwargs).eval()


# ---- specs ---------------------------------------------------------------------------------------------
def test_builtin_spec_from_string_and_none():
    for value in ("builtin", None):
        spec = TileEncoderSpec.from_config(value)
        assert spec.kind == "builtin" and spec.name == "builtin" and spec.tile_px == 64 and spec.mpp is None


def test_timm_spec_fields_and_defaults(tmp_path):
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "vit_small_patch16_224", "weights": tmp_path / "w.bin",
                                        "model_kwargs": {"img_size": 224, "init_values": 1e-5}, "pooling": "cls+mean"})
    assert spec.name == "timm:vit_small_patch16_224" and spec.weights == tmp_path / "w.bin"
    assert spec.model_kwargs == {"img_size": 224, "init_values": 1e-5}
    assert (spec.tile_px, spec.mpp, spec.mean, spec.std) == (224, 0.5, IMAGENET_MEAN, IMAGENET_STD)
    assert hash(spec) == hash(TileEncoderSpec.from_config({"kind": "timm", "model": "vit_small_patch16_224",
                                                           "weights": str(tmp_path / "w.bin"), "pooling": "cls+mean"}))


TIMM = {"kind": "timm", "model": "resnet18", "weights": "w.pth"}


@pytest.mark.parametrize("value, expected", [
    ("resnet50", "expected 'builtin', 'cohort' or a mapping"),
    ({"kind": "onnx"}, "tile_encoder.kind: expected one of"),
    ({**TIMM, "poolling": "cls"}, "unknown field(s) ['poolling']"),
    ({"kind": "timm", "weights": "w.pth"}, "tile_encoder.model: expected a timm model name"),
    ({"kind": "timm", "model": "resnet18"}, "tile_encoder.weights: expected the path of a local weights file"),
    ({**TIMM, "pooling": "max"}, "tile_encoder.pooling: expected one of ['avg', 'cls', 'mean', 'cls+mean']"),
    ({**TIMM, "tile_px": 0}, "tile_encoder.tile_px: expected a positive int, found 0"),
    ({**TIMM, "tile_px": 22.5}, "tile_encoder.tile_px: expected a positive int"),
    ({**TIMM, "mpp": -1}, "tile_encoder.mpp: expected a positive float"),
    ({**TIMM, "mean": [0.5, 0.5]}, "tile_encoder.mean: expected three numbers"),
    ({**TIMM, "std": [0.2, 0.0, 0.2]}, "tile_encoder.std: expected three positive numbers"),
    ({**TIMM, "model_kwargs": {"pretrained": True}}, "model_kwargs: ['pretrained'] not allowed"),
    ({**TIMM, "model_kwargs": [1, 2]}, "tile_encoder.model_kwargs: expected a mapping"),
    ({"kind": "callable", "entry": "no_colon"}, "tile_encoder.entry: expected 'package.module:function'"),
    ({"kind": "callable", "entry": "m:f", "pooling": "cls"}, "unknown field(s) ['pooling']"),
])
def test_bad_spec_names_field_and_expected_value(value, expected):
    with pytest.raises(TileEncoderError) as err:
        TileEncoderSpec.from_config(value)
    assert expected in str(err.value)
    assert isinstance(err.value, FusionRxError)


# ---- timm networks -------------------------------------------------------------------------------------
@needs_timm
def test_timm_cnn_avg_pool_equals_timms_forward_and_records_sha256(tmp_path, monkeypatch):
    model = timm_model("resnet10t")
    path = tmp_path / "resnet10t.pth"
    torch.save(model.state_dict(), path)  # with its classifier: dropped on load
    model.reset_classifier(0)
    # nothing may go to the network while the model is built and loaded
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network access"))
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": str(path), "tile_px": 64})
    emb = load_encoder(spec)
    tiles = random_tiles(5, 64)
    with torch.no_grad():
        expected = model(normalised(tiles)).numpy()
    got = emb.embed(tiles, batch_size=2)  # several batches
    assert got.dtype == np.float32 and got.shape == (5, 512) == (5, emb.feature_dim)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert emb.name == "timm:resnet10t" and (emb.tile_px, emb.mpp) == (64, 0.5)
    assert emb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(emb.ignored_keys) == {"fc.weight", "fc.bias"}
    assert not emb.module.training
    assert emb.embed(tiles[:0]).shape == (0, 512)


@needs_timm
def test_tiles_of_another_size_are_resized_to_tile_px(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm_model("resnet10t", num_classes=0).state_dict(), path)
    emb = load_encoder(TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": path,
                                                    "tile_px": 32}))
    uniform = np.full((3, 96, 96, 3), 200, np.uint8)  # resizing a flat tile keeps it flat
    np.testing.assert_allclose(emb.embed(uniform), emb.embed(uniform[:, :32, :32]), rtol=1e-5, atol=1e-5)


@needs_timm
def test_timm_vit_tokens_cls_mean_from_prefixed_safetensors(tmp_path):
    from safetensors.torch import save_file

    kwargs = {"img_size": 32, "depth": 2}
    model = timm_model("vit_tiny_patch16_224", num_classes=0, **kwargs)
    path = tmp_path / "vit.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(path))  # DDP prefix
    tiles = random_tiles(4, 32, seed=1)
    with torch.no_grad():
        tokens = model.forward_features(normalised(tiles))
    npt = model.num_prefix_tokens
    expected = {"cls": tokens[:, 0], "mean": tokens[:, npt:].mean(1),
                "cls+mean": torch.cat([tokens[:, 0], tokens[:, npt:].mean(1)], 1), "avg": model(normalised(tiles))}
    for pooling, want in expected.items():
        spec = TileEncoderSpec.from_config({"kind": "timm", "model": "vit_tiny_patch16_224", "weights": path,
                                            "model_kwargs": kwargs, "pooling": pooling, "tile_px": 32})
        emb = load_encoder(spec)
        np.testing.assert_allclose(emb.embed(tiles), want.detach().numpy(), rtol=1e-5, atol=1e-5)
        assert emb.feature_dim == (384 if pooling == "cls+mean" else 192)


@needs_timm
def test_truncated_resnet_drops_the_cut_stages_of_a_full_checkpoint(tmp_path):
    full = timm_model("resnet10t")
    path = tmp_path / "full.pth"
    torch.save({"state_dict": full.state_dict()}, path)  # a wrapped checkpoint
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": path, "pooling": "mean",
                                        "tile_px": 64, "model_kwargs": {"features_only": True, "out_indices": [3]}})
    emb = load_encoder(spec)
    tiles = random_tiles(3, 64, seed=2)
    with torch.no_grad():
        x = normalised(tiles)
        x = full.maxpool(full.act1(full.bn1(full.conv1(x))))
        expected = full.layer3(full.layer2(full.layer1(x))).mean((2, 3)).numpy()
    np.testing.assert_allclose(emb.embed(tiles), expected, rtol=1e-5, atol=1e-5)
    assert emb.feature_dim == 256 and any(k.startswith("layer4.") for k in emb.ignored_keys)


@needs_timm
def test_weights_of_another_architecture_name_the_file_and_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm_model("resnet10t", num_classes=0).state_dict(), path)
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "vit_tiny_patch16_224", "weights": path,
                                        "model_kwargs": {"img_size": 32, "depth": 1}, "tile_px": 32})
    with pytest.raises(TileEncoderError) as err:
        load_encoder(spec)
    msg = str(err.value)
    assert msg.startswith(f"{path}: weights do not fit the model")
    assert "missing 18 ['blocks.0.attn.proj.bias'" in msg and "unexpected 84 ['bn1.bias'" in msg


@needs_timm
def test_wider_weights_are_a_shape_mismatch(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(timm_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=1, embed_dim=96,
                          num_heads=3).state_dict(), path)
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "vit_tiny_patch16_224", "weights": path,
                                        "model_kwargs": {"img_size": 32, "depth": 1}, "tile_px": 32})
    with pytest.raises(TileEncoderError, match="shape mismatches"):
        load_encoder(spec)


@needs_timm
def test_missing_weights_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "uni.safetensors"
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": path})
    with pytest.raises(TileEncoderError, match=f"{path}: weights file does not exist"):
        load_encoder(spec)


@needs_timm
def test_cls_pooling_of_a_cnn_is_refused_at_load(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm_model("resnet10t", num_classes=0).state_dict(), path)
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": path, "pooling": "cls",
                                        "tile_px": 32})
    with pytest.raises(TileEncoderError, match="not tokens; expected 'mean' or 'avg'"):
        load_encoder(spec)


def test_unreadable_weights_name_the_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not a checkpoint")
    spec = TileEncoderSpec.from_config({"kind": "timm", "model": "resnet10t", "weights": path})
    with pytest.raises(TileEncoderError, match=f"{path}: cannot read weights"):
        read_state_dict(spec.weights)


# ---- callable and builtin ------------------------------------------------------------------------------
def tiny_encoder(weights_path: str, width: int = 4) -> nn.Module:
    """A user's family timm cannot build: conv -> global average pool -> [N, width]."""
    net = nn.Sequential(nn.Conv2d(3, width, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.load_state_dict(torch.load(weights_path, weights_only=True))
    return net


def test_callable_kind_runs_the_users_function(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    spec = TileEncoderSpec.from_config({"kind": "callable", "entry": f"{__name__}:tiny_encoder", "weights": path,
                                        "model_kwargs": {"width": 6}, "tile_px": 16, "mpp": 1.0,
                                        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    emb = load_encoder(spec)
    tiles = random_tiles(7, 16, seed=3)
    with torch.no_grad():
        expected = net(normalised(tiles, (0.5,) * 3, (0.25,) * 3)).numpy()
    np.testing.assert_allclose(emb.embed(tiles), expected, rtol=1e-5, atol=1e-6)
    assert emb.name == f"callable:{__name__}:tiny_encoder" and emb.feature_dim == 6 and emb.mpp == 1.0
    assert emb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_callable_that_cannot_be_imported_names_the_entry():
    spec = TileEncoderSpec.from_config({"kind": "callable", "entry": f"{__name__}:no_such_function"})
    with pytest.raises(TileEncoderError, match="tile_encoder.entry: cannot import"):
        load_encoder(spec)


def test_builtin_embedder_matches_the_tile_encoder(tmp_path):
    from imaging.tile_encoder import TileEncoder, save_tile_encoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = TileEncoder(feature_dim=8).eval()
    path = tmp_path / "tile_encoder.pt"
    save_tile_encoder(encoder, path)
    emb = load_encoder(TileEncoderSpec.from_config({"kind": "builtin", "weights": str(path)}))
    tiles = random_tiles(6, 128, seed=4)  # downscaled to 64 px by both
    np.testing.assert_allclose(emb.embed(tiles), encoder.encode(tiles), rtol=1e-5, atol=1e-6)
    assert (emb.name, emb.tile_px, emb.feature_dim) == ("builtin", 64, 8)
    assert emb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    wrapped = TileEmbedder.from_builtin(encoder)
    np.testing.assert_allclose(wrapped.encode(tiles), encoder.encode(tiles), rtol=1e-5, atol=1e-6)
    with pytest.raises(TileEncoderError, match="builtin encoder's checkpoint"):
        load_encoder(TileEncoderSpec.from_config({"kind": "builtin", "weights": str(tmp_path / "none.pt")}))


# ---- CLAM HDF5 -----------------------------------------------------------------------------------------
META = {"encoder": "timm:resnet10t", "weights_sha256": "ab" * 32, "tile_px": 224, "mpp": 0.5}


def test_clam_h5_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(9, 4)).astype(np.float32)
    coords = rng.integers(0, 50_000, size=(9, 2))
    path = write_clam_h5(tmp_path / "slide.h5", feats, coords,
                         {**META, "slide_path": "/data/a.svs", "mean": [0.1, 0.2, 0.3], "note": None})
    got = read_clam_h5(path)
    np.testing.assert_array_equal(got.features, feats)
    np.testing.assert_array_equal(got.coords, coords)
    assert got.coords.dtype == np.int64 and got.features.dtype == np.float32
    assert {k: got.attrs[k] for k in META} == META
    assert got.attrs["slide_path"] == "/data/a.svs" and got.attrs["note"] == ""
    np.testing.assert_allclose(got.attrs["mean"], [0.1, 0.2, 0.3])
    with h5py.File(path, "r") as f:  # plain CLAM layout: any CLAM-style reader finds these two datasets
        assert set(f) == {"features", "coords"}
    assert [p.name for p in tmp_path.iterdir()] == ["slide.h5"]


def test_clam_h5_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_clam_h5(tmp_path / "slide.h5", np.ones((2, 3)), np.zeros((2, 2), int), META)
    with pytest.raises(FeatureFileError, match=r"meta\['bad'\]"):  # fails after the datasets are written
        write_clam_h5(path, np.zeros((4, 3)), np.zeros((4, 2), int), {**META, "bad": object()})
    assert read_clam_h5(path).features.shape == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["slide.h5"]


@pytest.mark.parametrize("features, coords, meta, expected", [
    (np.ones((3, 2)), np.zeros((2, 2), int), META, "expected features [N,D] and coords [N,2]"),
    (np.ones((2, 2)), np.full((2, 2), 0.5), META, "coords: expected integer level-0 pixel coordinates"),
    (np.ones((2, 2)), np.zeros((2, 2), int), {"encoder": "builtin"}, "meta lacks ['weights_sha256', 'tile_px', 'mpp']"),
    (np.ones((2, 2)), np.zeros((2, 2), int), {**META, "mpp": None}, "meta['mpp']: expected um/px"),
])
def test_clam_h5_bad_input_names_file_and_field(tmp_path, features, coords, meta, expected):
    with pytest.raises(FeatureFileError) as err:
        write_clam_h5(tmp_path / "x.h5", features, coords, meta)
    assert str(tmp_path / "x.h5") in str(err.value) and expected in str(err.value)


def test_read_clam_h5_without_coords_names_the_dataset(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["features"] = np.ones((2, 2))
    with pytest.raises(FeatureFileError, match="lacks dataset"):
        read_clam_h5(tmp_path / "x.h5")
