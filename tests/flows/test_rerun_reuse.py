"""Scheduled reruns: tasks reuse stored artifacts while their inputs' hashes, config and code are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import flows.stages.radiology as radiology
import imaging.tile_encoder as tile_encoder
from flows.config import RunConfig
from flows.store.input_hashes import path_sha256
from flows.tasks import fit_tile_encoder_task, ingest_radiology_task, plan_slide_task, slide_features_task


@pytest.fixture()
def cfg() -> dict:
    return RunConfig(tile_encoder_epochs=1, encoder_tiles_per_slide=8).to_dict()


def _rad(pid, ct_dir, pet_dir, root, cfg, run_id):
    inputs = {"ct": path_sha256(ct_dir), "pet": path_sha256(pet_dir)}
    return ingest_radiology_task.fn(pid, str(ct_dir), str(pet_dir), [], inputs, str(root), cfg, run_id)


def test_radiology_is_recomputed_only_when_the_series_changes(small_cohort, tmp_path, cfg, monkeypatch):
    truth = json.loads((small_cohort / "truth.json").read_text())
    pid = next(p for p in sorted(truth["imaging"]) if truth["layouts"]["pet_units"].get(p) == "BQML")
    ct_dir = Path(truth["imaging"][pid]["ct"]["series_dir"])
    pet_dir = Path(truth["imaging"][pid]["pet"]["series_dir"])
    calls = []
    real = radiology.ingest_radiology
    monkeypatch.setattr(radiology, "ingest_radiology", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = _rad(pid, ct_dir, pet_dir, tmp_path, cfg, "run-1")
    second = _rad(pid, ct_dir, pet_dir, tmp_path, cfg, "run-2")
    assert len(calls) == 1 and (first.status, second.status) == ("new", "reused")
    assert second.value == json.loads(json.dumps(first.value, default=float))
    assert second.value["patch_npz"] == str(tmp_path / "imaging" / "radiology" / pid / f"{pid}_patches.npz")
    # a changed PET series (new bytes) invalidates the artifact
    changed = tmp_path / "pet_copy"
    changed.mkdir()
    for f in sorted(pet_dir.iterdir()):
        (changed / f.name).write_bytes(f.read_bytes())
    last = sorted(changed.iterdir())[-1]
    last.write_bytes(last.read_bytes() + b"\0\0")
    third = _rad(pid, ct_dir, changed, tmp_path, cfg, "run-3")
    assert len(calls) == 2 and third.status == "changed"


def test_tile_encoder_and_slide_features_are_reused(small_cohort, tmp_path, cfg, monkeypatch):
    slides = sorted((small_cohort / "slides").glob("*.tiff"))[:3]
    plans = [plan_slide_task.fn(p.name[:12], str(p), {"slide": path_sha256(p)}, str(tmp_path), cfg, "run-1").value
             for p in slides]
    enc1 = fit_tile_encoder_task.fn(plans, {}, str(tmp_path), cfg, "run-1").value
    feat_inputs = {"slide": path_sha256(slides[0]), "encoder": "k1"}
    out1 = slide_features_task.fn(plans[0], enc1, feat_inputs, str(tmp_path), cfg, "run-1")
    mtime = (tmp_path / "wsi" / f"{plans[0].patient_id}.h5").stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("the tile encoder was retrained")

    monkeypatch.setattr(tile_encoder, "fit_tile_encoder", no_training)
    enc2 = fit_tile_encoder_task.fn(plans, {}, str(tmp_path), cfg, "run-2")
    assert enc2.status == "reused"
    for a, b in zip(enc1.module.state_dict().values(), enc2.value.module.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    out2 = slide_features_task.fn(plans[0], enc2.value, feat_inputs, str(tmp_path), cfg, "run-2")
    assert out2.value == out1.value and out2.status == "reused"
    assert (tmp_path / "wsi" / f"{plans[0].patient_id}.h5").stat().st_mtime_ns == mtime
    # another config (more encoder epochs) means retraining
    with pytest.raises(AssertionError, match="retrained"):
        fit_tile_encoder_task.fn(plans, {}, str(tmp_path), {**cfg, "tile_encoder_epochs": 2}, "run-3")
