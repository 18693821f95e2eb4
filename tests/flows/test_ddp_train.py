"""DDP: the tile encoder trained by 2 CPU processes on gloo (torch.distributed.run) ends with the same weights
on both ranks, its loss falls, and a deterministic full-batch run equals one process averaging the two
shards' gradients (what DistributedDataParallel's all-reduce computes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from imaging.tile_encoder import load_tile_encoder
from imaging.tile_encoder_ddp import TileAutoencoder, train_step_loss

ROOT = Path(__file__).resolve().parents[2]


def make_tiles(n: int, seed: int = 0) -> np.ndarray:
    """Two kinds of 64 px tiles: pink background with purple dots at low or high density."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    tiles = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        img = np.full((64, 64, 3), (235, 180, 210), float)
        for _ in range(4 if i % 2 else 20):
            cy, cx = rng.uniform(4, 60, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 9] = (90, 40, 140)
        tiles[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255)
    return tiles


# A rank that gloo's C++ runtime aborts (std::terminate on a joinable thread: "terminate called without an
# active exception", SIGABRT) was seen once in ~10 suite runs, on a loaded machine, and not in 3 runs alone: a
# known class of gloo teardown races, not this code. Such a run is tried once more; any other failure, or the
# same abort twice, fails the test.
GLOO_ABORT = "terminate called without an active exception"


def torchrun(args: list[str], tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flows.training.ddp_train", *args, "--device", "cpu", "--report", str(tmp / "report.json")]
    for attempt in (1, 2):
        (tmp / "report.json").unlink(missing_ok=True)
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
        if proc.returncode == 0 or GLOO_ABORT not in proc.stderr or attempt == 2:
            break
        print(f"torchrun: a rank aborted in gloo ({GLOO_ABORT!r}); trying once more", file=sys.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "report.json").read_text())


def test_two_gloo_ranks_train_identical_weights_and_the_loss_falls(tmp_path):
    np.save(tmp_path / "tiles.npy", make_tiles(48))
    report = torchrun(["--tiles", "tiles.npy", "--out", "enc.pt", "--epochs", "8", "--batch-size", "8",
                       "--lr", "3e-3"], tmp_path)
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    a, b = report["rank_weight_sha256"]
    assert a == b  # both ranks hold bit-identical parameters and buffers
    hist = report["loss_history"]
    assert hist[-1] < 0.7 * hist[0], hist
    enc = load_tile_encoder(tmp_path / "enc.pt")  # rank 0's checkpoint is the pipeline's format
    assert enc.loss_history == hist


def test_full_batch_ddp_equals_one_process_averaging_the_shards(tmp_path):
    tiles = make_tiles(16, seed=1)
    np.save(tmp_path / "tiles.npy", tiles)
    epochs, lr = 4, 0.5  # plain full-batch SGD: the comparison is exact up to float32 summation order
    report = torchrun(["--tiles", "tiles.npy", "--out", "enc.pt", "--epochs", str(epochs), "--batch-size", "8",
                       "--lr", str(lr), "--no-augment", "--seed", "5", "--optimizer", "sgd"], tmp_path)
    # reference: one process, same init, each step = mean of the two shards' losses (rank r holds r::2)
    torch.manual_seed(5)
    model = TileAutoencoder(32)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    data = torch.as_tensor(tiles).permute(0, 3, 1, 2).contiguous()
    hist = []
    for _ in range(epochs):
        losses = [train_step_loss(model, data[r::2], None) for r in (0, 1)]
        loss = (losses[0] + losses[1]) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss))
    np.testing.assert_allclose(report["loss_history"], hist, rtol=1e-5)
    assert hist[-1] < hist[0]
    ddp = load_tile_encoder(tmp_path / "enc.pt")
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(dict(ddp.named_parameters())[name], p.detach(), rtol=1e-4, atol=1e-6)
