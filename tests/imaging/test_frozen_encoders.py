"""The shipped frozen encoders: checked against their manifest, a patient's features independent of the cohort,
and the training script that made them reproducing a manifest of its own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flows.config import RunConfig
from fusion.errors import FusionRxError
from imaging import frozen_encoders as fe


def test_manifest_lists_every_shipped_file_with_its_sha256():
    files = fe.manifest()["files"]
    assert set(files) == {fe.TILE, *fe.VOLUME.values()}
    for name, meta in files.items():
        assert fe.file_sha256(fe.WEIGHTS_DIR / name) == meta["sha256"]
        assert meta["bytes"] < 2_000_000  # small files in the package


def test_altered_weights_are_refused_naming_the_file(tmp_path, monkeypatch):
    shutil.copytree(fe.WEIGHTS_DIR, tmp_path / "weights")
    monkeypatch.setattr(fe, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(fe, "MANIFEST", tmp_path / "weights" / "MANIFEST.json")
    assert fe.weights_path(fe.TILE) == (tmp_path / "weights" / fe.TILE, fe.weights_sha256(fe.TILE))
    target = tmp_path / "weights" / fe.VOLUME["ct"]
    raw = bytearray(target.read_bytes())
    raw[-10] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(FusionRxError, match=fe.VOLUME["ct"]):
        fe.weights_path(fe.VOLUME["ct"])


def test_a_patient_embedding_does_not_depend_on_the_cohort(tmp_path):
    """With the frozen encoders a patient's CT / PET embedding is the same in a cohort of 6 and of 5: one
    patient dropping out (a damaged file) changes nobody else's features; cohort-trained encoders do."""
    from flows.stages.radiology import CT_FEATURES, PET_FEATURES, encode_volumes

    rng = np.random.default_rng(0)
    results = []
    for i in range(6):
        path = tmp_path / f"p{i}.npz"
        np.savez(path, ct_hu=rng.normal(0, 300, (32, 32, 32)).astype(np.float32),
                 suv_bw=rng.gamma(2.0, 1.5, (32, 32, 32)).astype(np.float32))
        results.append({"patient_id": f"P{i}", "patch_npz": str(path), "suv_npz": "x",
                        "phenotypes": {k: float(rng.normal()) for k in (*CT_FEATURES, *PET_FEATURES)}})
    cfg = RunConfig().to_dict()
    full, fewer = encode_volumes(results, cfg), encode_volumes(results[1:], cfg)
    assert full["encoders"]["ct"] == f"builtin:{fe.weights_sha256(fe.VOLUME['ct'])}"
    assert full["ct"].attrs["encoder"] == full["encoders"]["ct"]
    for kind in ("ct", "pet"):
        np.testing.assert_array_equal(full[kind].loc["P1":].to_numpy(), fewer[kind].to_numpy())
        assert np.ptp(full[kind].filter(like="_ae_").to_numpy(), axis=0).min() > 0  # patients differ
    cohort = {**cfg, "volume_encoder": "cohort", "volume_encoder_epochs": 3}
    a, b = encode_volumes(results, cohort), encode_volumes(results[1:], cohort)
    assert not np.allclose(a["ct"].loc["P1":].filter(like="_ae_").to_numpy(), b["ct"].filter(like="_ae_").to_numpy())


def test_run_geometry_other_than_the_trained_one_is_refused():
    cfg = {**RunConfig().to_dict(), "volume_patch_vox": 48}
    with pytest.raises(FusionRxError, match="volume_patch_vox"):
        fe.builtin_volume_encoder("ct", cfg)
    with pytest.raises(FusionRxError, match="volume_encoder"):
        fe.check_choice("volume_encoder", "pretrained")


def test_builtin_tile_spec_points_at_the_shipped_weights():
    from imaging.pretrained_encoder import TileEncoderSpec, load_encoder

    spec = TileEncoderSpec.from_config("builtin")
    assert spec.weights == fe.WEIGHTS_DIR / fe.TILE and TileEncoderSpec.from_config("cohort").weights is None
    emb = load_encoder(spec)
    assert emb.weights_sha256 == fe.weights_sha256(fe.TILE)
    tiles = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(emb.embed(tiles), emb.embed(tiles))


@pytest.mark.slow
def test_training_script_writes_weights_and_a_matching_manifest(tmp_path, one_torch_thread):
    from flows.training.frozen_encoders import train

    record = train(patients=6, seed=5, out=tmp_path)
    assert json.loads((tmp_path / "MANIFEST.json").read_text()) == record
    for name, meta in record["files"].items():
        assert fe.file_sha256(tmp_path / name) == meta["sha256"]
    assert record["training"]["volume"]["ct_patients"] == 6 and record["training"]["tile"]["slides"] >= 4
    enc = fe.load_volume_encoder(tmp_path / fe.VOLUME["pet"], RunConfig().volume_embed_dim)
    assert enc.embed_dim == RunConfig().volume_embed_dim
