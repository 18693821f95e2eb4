"""Tile CNN trained self-supervised on the cohort's own tiles, and the per-slide tile-feature record.

The encoder is a small conv net (conv stages -> global average pool -> feature_dim). It learns as the
bottleneck of a masked denoising autoencoder: half of the 8x8 patches of an augmented 64x64 tile are
greyed out and the decoder must rebuild the whole tile from the pooled feature vector alone, so the
features summarise colour, nuclear density and texture. This trains in seconds on two CPU cores and
needs no large batches (unlike contrastive losses). Nothing is downloaded: pretrained weights can be
loaded from a local checkpoint instead. The training step and epoch (``train_step_loss``, ``train_epoch``)
are shared with the DistributedDataParallel trainer (``imaging.tile_encoder_ddp``). Slides are turned into
feature files by the pipeline's ``flows.stages.pathology.extract_features``; ``TileFeatures`` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion.device import autocast, resolve_device
from fusion.errors import FusionRxError, SlideError

INPUT_SIZE = 64  # tiles are downscaled to INPUT_SIZE x INPUT_SIZE px for the network
CHECKPOINT_FORMAT = "fusionrx-tile-encoder-v1"


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class TileEncoder(nn.Module):
    """Conv stages -> global average pool -> linear to feature_dim; input RGB in [0,1], [B,3,64,64]."""

    def __init__(self, feature_dim: int = 32, widths: tuple[int, ...] = (16, 32, 64), input_size: int = INPUT_SIZE):
        super().__init__()
        # each stage halves the resolution; all but the first (cheap, full-resolution) add a second conv
        layers, c_in = [], 3
        for i, w in enumerate(widths):
            layers.append(_conv_block(c_in, w, 2))
            if i > 0:
                layers.append(_conv_block(w, w, 1))
            c_in = w
        self.widths = tuple(int(w) for w in widths)
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, feature_dim)
        self.feature_dim = int(feature_dim)
        self.input_size = int(input_size)
        self.loss_history: list[float] = []  # mean self-supervised loss per epoch, filled by fit_tile_encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features [B, feature_dim] of images [B,3,H,W] scaled to [0,1]."""
        h = self.stages(x - 0.5)
        return self.head(h.mean(dim=(2, 3)))

    def prepare(self, tiles: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """RGB uint8 tiles [B,H,W,3] -> float [B,3,input_size,input_size] in [0,1] (area downscaling)."""
        x = torch.as_tensor(np.asarray(tiles) if not isinstance(tiles, torch.Tensor) else tiles)
        x = x.to(device or next(self.parameters()).device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return x

    @torch.no_grad()
    def encode(self, tiles: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Features float32 [B, feature_dim] of RGB uint8 tiles [B,H,W,3] (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for s in range(0, len(tiles), batch_size):
            with autocast(device):
                out.append(self(self.prepare(tiles[s : s + batch_size], device)).float().cpu())
        self.train(was_training)
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


class _TileDecoder(nn.Module):
    """Feature vector -> RGB [B,3,32,32] in [0,1] (training-time only)."""

    def __init__(self, feature_dim: int, width: int = 64):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(feature_dim, width * 4 * 4)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), _conv_block(width, 32, 1),  # 8
            nn.Upsample(scale_factor=2), _conv_block(32, 16, 1),  # 16
            nn.Upsample(scale_factor=2), _conv_block(16, 8, 1),  # 32
            nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.fc(z).view(-1, self.width, 4, 4)))


class TileAutoencoder(nn.Module):
    """Encoder + decoder as one module (what DDP wraps); forward gives the half-size reconstruction [B,3,32,32]."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.encoder = TileEncoder(feature_dim)
        self.decoder = _TileDecoder(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _collect_tiles(tiles: np.ndarray | Iterable, size: int) -> torch.Tensor:
    """Gather tiles (an array [N,H,W,3] or an iterable of arrays / (coords, tiles) batches) as uint8 [N,3,s,s]."""
    if isinstance(tiles, np.ndarray):
        batches: Iterable = [tiles[s : s + 512] for s in range(0, len(tiles), 512)]
    else:
        batches = tiles
    out = []
    for batch in batches:
        if isinstance(batch, tuple):  # (coords, tiles) from iter_tiles
            batch = batch[1]
        x = torch.as_tensor(np.asarray(batch)).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="area")
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    if not out:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.cat(out)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random dihedral transform (flips / 90-degree rotations) per batch and mild brightness jitter per tile."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        x = x.flip(3)
    scale = 1.0 + 0.05 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 2 - 1)
    return (x * scale.to(x.device)).clamp(0, 1)


def _mask_patches(x: torch.Tensor, gen: torch.Generator, patch: int = 8, ratio: float = 0.5) -> torch.Tensor:
    """Grey out a random `ratio` of the patch x patch squares of each image."""
    b, _, h, w = x.shape
    keep = (torch.rand(b, 1, h // patch, w // patch, generator=gen) >= ratio).float().to(x.device)
    keep = F.interpolate(keep, size=(h, w), mode="nearest")
    return x * keep + 0.5 * (1 - keep)


def train_step_loss(model: nn.Module, batch: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Masked denoising loss of one uint8 batch [B,3,s,s] (forward under the mixed-precision policy).

    With a generator: augmented, half the patches greyed out; without one: plain reconstruction.
    """
    clean = batch.float() / 255.0
    if gen is not None:
        clean = _augment(clean, gen)
    target = F.interpolate(clean, scale_factor=0.5, mode="area")
    inp = _mask_patches(clean, gen) if gen is not None else clean
    with autocast(clean.device):
        recon = model(inp)
    return F.mse_loss(recon.float(), target)


def train_epoch(
    model: nn.Module,
    data: torch.Tensor,
    order: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    gen: torch.Generator | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[float, int]:
    """One pass over tiles ``data[order]`` (uint8 [N,3,s,s]) in batches; (sum of loss x batch size, tiles used).

    Batches of fewer than two tiles are skipped (BatchNorm needs two samples). ``model`` may be DDP-wrapped:
    its backward then averages the gradients over the ranks.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        if len(idx) < 2:
            continue
        loss = train_step_loss(model, data[idx].to(device), gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total, count


def load_tile_encoder(checkpoint: str | os.PathLike, feature_dim: int | None = None) -> TileEncoder:
    """Load a TileEncoder from a local checkpoint written by save_tile_encoder (nothing is downloaded)."""
    from imaging.checkpoints import read_checkpoint

    path = Path(checkpoint)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, "tile-encoder")
    if feature_dim is not None and int(ckpt["feature_dim"]) != int(feature_dim):
        raise FusionRxError(f"{path}: feature_dim={ckpt['feature_dim']} in checkpoint, expected {feature_dim}")
    encoder = TileEncoder(int(ckpt["feature_dim"]), tuple(ckpt["widths"]), int(ckpt["input_size"]))
    encoder.load_state_dict(ckpt["state_dict"])
    encoder.loss_history = list(ckpt.get("loss_history", []))
    return encoder.eval()


def save_tile_encoder(encoder: TileEncoder, path: str | os.PathLike) -> None:
    """Write the encoder weights and shape to a checkpoint file (temp file, then rename)."""
    path = Path(path)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "feature_dim": encoder.feature_dim,
        "widths": list(encoder.widths),
        "input_size": encoder.input_size,
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "loss_history": list(encoder.loss_history),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def fit_tile_encoder(
    tiles: np.ndarray | Iterable,
    feature_dim: int = 32,
    epochs: int = 10,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> TileEncoder:
    """Self-supervised (masked denoising autoencoder) tile encoder on RGB uint8 tiles [N,H,W,3] or batches of them.

    If checkpoint is given, the weights are loaded from that local file instead of training. The returned
    encoder is in eval mode on `device`, with the per-epoch mean loss in `encoder.loss_history`.
    """
    dev = resolve_device(device)
    if checkpoint is not None:
        return load_tile_encoder(checkpoint, feature_dim).to(dev)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TileAutoencoder(feature_dim).to(dev)
    data = _collect_tiles(tiles, model.encoder.input_size)
    if len(data) < 2:
        raise FusionRxError(f"fit_tile_encoder: got {len(data)} tiles, need at least 2 to train")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, -(-len(data) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    history = []
    for _ in range(epochs):
        total, count = train_epoch(model, data, torch.randperm(len(data), generator=gen), opt, batch_size, gen, sched)
        history.append(total / max(count, 1))
    model.encoder.loss_history = history
    return model.encoder.eval()


@dataclass
class TileFeatures:
    """Per-tile features float32 [T,d] of one slide with their level-0 top-left coords (x, y) px [T,2]."""

    features: np.ndarray
    coords_level0: np.ndarray
    tile_size_level0: int
    mpp: float  # um/px of the level the tiles were read at
    slide_path: str
    level: int = 0
    tile_size: int = 0  # tile side in px at `level`

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.coords_level0 = np.asarray(self.coords_level0, dtype=np.int64).reshape(-1, 2)
        if self.features.ndim != 2 or len(self.features) != len(self.coords_level0):
            raise SlideError(
                f"{self.slide_path}: features {self.features.shape} and coords {self.coords_level0.shape} disagree"
            )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def save_h5(self, path: str | os.PathLike) -> None:
        """Write to HDF5 (datasets features, coords_level0; attrs for the rest) via a temp file and rename."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=self.features, compression="gzip")
            f.create_dataset("coords_level0", data=self.coords_level0)
            f.attrs["tile_size_level0"] = int(self.tile_size_level0)
            f.attrs["mpp"] = float(self.mpp)
            f.attrs["slide_path"] = str(self.slide_path)
            f.attrs["level"] = int(self.level)
            f.attrs["tile_size"] = int(self.tile_size)
        os.replace(tmp, path)

    @classmethod
    def load_h5(cls, path: str | os.PathLike) -> "TileFeatures":
        """Read TileFeatures written by save_h5; SlideError naming the file and field if malformed."""
        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("features", "coords_level0") if k not in f] + [
                    k for k in ("tile_size_level0", "mpp", "slide_path") if k not in f.attrs
                ]
                if missing:
                    raise SlideError(f"{path}: tile-feature file lacks {missing}")
                return cls(
                    features=f["features"][()],
                    coords_level0=f["coords_level0"][()],
                    tile_size_level0=int(f.attrs["tile_size_level0"]),
                    mpp=float(f.attrs["mpp"]),
                    slide_path=str(f.attrs["slide_path"]),
                    level=int(f.attrs.get("level", 0)),
                    tile_size=int(f.attrs.get("tile_size", 0)),
                )
        except OSError as exc:
            raise SlideError(f"{path}: cannot read tile-feature HDF5 ({exc})") from exc

