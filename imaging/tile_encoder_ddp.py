"""Tile-encoder training under torchrun: DistributedDataParallel over the ranks of one process group.

Launched with WORLD_SIZE > 1 (torchrun / torch.distributed.run), each rank trains the same masked
denoising autoencoder as ``fit_tile_encoder``, with the same training step and epoch
(``imaging.tile_encoder.train_epoch``), on its DistributedSampler shard of the tiles; DDP all-reduces
(averages) the gradients, so every rank ends with the same weights. This module holds only what DDP
adds: the process group (gloo on CPU, nccl on CUDA), the sharding, the cross-rank loss mean and the
final sync. Run alone (WORLD_SIZE unset or 1) it is plain single-process training.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from fusion.device import resolve_device
from fusion.errors import FusionRxError
from imaging.tile_encoder import (
    INPUT_SIZE,
    TileAutoencoder,
    TileEncoder,
    _collect_tiles,
    train_epoch,
    train_step_loss,
)

__all__ = ["DistInfo", "TileAutoencoder", "fit_tile_encoder_ddp", "init_distributed", "train_step_loss",
           "weights_sha256"]


@dataclass
class DistInfo:
    """Rank and world size of this process (world 1 when not launched under torchrun)."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""
    checksums: list[str] = field(default_factory=list)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group from torchrun's env vars (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo(dist.get_rank(), dist.get_world_size(), backend)


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (bytes, in state_dict order): equal iff the weights are equal."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_tile_encoder_ddp(tiles: np.ndarray, feature_dim: int = 32, epochs: int = 10, seed: int = 0,
                         batch_size: int = 64, lr: float = 2e-3, augment: bool = True,
                         device: str | torch.device | None = None,
                         optimizer: str = "adamw") -> tuple[TileEncoder, DistInfo, list[float]]:
    """Train on this rank's shard of ``tiles`` (uint8 [N,H,W,3]); (encoder, dist info, per-epoch global mean loss).

    ``batch_size`` is per rank; ``optimizer`` 'adamw' or 'sgd'. With ``augment=False`` the run is
    deterministic, so a 2-rank run equals one process averaging the two shards' gradients (the test's check;
    with SGD to float32 rounding, Adam amplifies rounding where a gradient is near zero).
    """
    dev = resolve_device(device)
    info = init_distributed(dev)
    data = _collect_tiles(tiles, INPUT_SIZE)
    if len(data) < 2 * info.world_size:
        raise FusionRxError(f"fit_tile_encoder_ddp: got {len(data)} tiles, need at least 2 per rank "
                            f"({info.world_size} ranks)")
    torch.manual_seed(seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = TileAutoencoder(feature_dim).to(dev)
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if info.world_size > 1 else model
    sampler = DistributedSampler(range(len(data)), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=augment, seed=seed)
    if optimizer not in ("adamw", "sgd"):
        raise FusionRxError(f"fit_tile_encoder_ddp: optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    opt = (torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4) if optimizer == "adamw"
           else torch.optim.SGD(net.parameters(), lr=lr))
    gen = torch.Generator().manual_seed(seed * 1009 + info.rank) if augment else None
    history = []
    net.train()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        # shards are equal-sized, so every rank skips a too-small last batch alike
        total, count = train_epoch(net, data, torch.as_tensor(list(sampler)), opt, batch_size, gen)
        history.append(_global_mean(total, count, info))
    if info.world_size > 1:  # BatchNorm running stats: each rank updated its own after the last sync
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    encoder = model.encoder.eval()
    encoder.loss_history = history
    info.checksums = _gather_checksums(model, info)
    return encoder, info, history


def _global_mean(total: float, count: int, info: DistInfo) -> float:
    """The epoch's mean loss over every rank's samples, from this rank's (loss sum, sample count)."""
    both = torch.tensor([total, count], dtype=torch.float64)
    if info.world_size > 1:
        dist.all_reduce(both)
    return float(both[0] / max(both[1], 1))


def _gather_checksums(model: nn.Module, info: DistInfo) -> list[str]:
    """Every rank's weights checksum (gathered to all ranks; one entry when single-process)."""
    mine = weights_sha256(model)
    if info.world_size == 1:
        return [mine]
    out: list[str | None] = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return [str(c) for c in out]
