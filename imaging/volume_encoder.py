"""3D CNN with squeeze-and-excitation for CT/PET patches, trained label-free as an autoencoder."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusion.device import autocast
from fusion.device import resolve_device as _device
from imaging.volume import Volume, crop_patch  # noqa: F401 (crop_patch re-exported: it lives without torch)


class SEBlock3d(nn.Module):
    """Squeeze-and-excitation: reweight channels by a gate computed from their global average."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, D, H, W] scaled per channel by a gate in (0, 1)."""
        return x * self.gate(x)[:, :, None, None, None]


class SECNN3d(nn.Module):
    """Conv3d-BN-ReLU-SE stages (each halving the grid), global average pool, linear to `embed_dim`.

    Holds the per-channel input mean/std (buffers) fitted on the training patches, so raw HU /
    SUV patches go in and the same normalisation is applied at training and embedding time.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 16, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        self.in_channels, self.embed_dim, self.widths = in_channels, embed_dim, tuple(widths)
        stages, c_in = [], in_channels
        for c_out in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv3d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                    nn.BatchNorm3d(c_out),
                    nn.ReLU(inplace=True),
                    nn.Conv3d(c_out, c_out, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm3d(c_out),
                    nn.ReLU(inplace=True),
                    SEBlock3d(c_out),
                )
            )
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, embed_dim)
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise raw patches [N, C, D, H, W] with the stored per-channel mean/std."""
        return (x - self.input_mean[None, :, None, None, None]) / self.input_std[None, :, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw patches [N, C, D, H, W] -> embeddings [N, embed_dim]."""
        features = self.stages(self.normalise(x))
        return self.head(features.mean(dim=(2, 3, 4)))


class VolumeAutoencoder(nn.Module):
    """SECNN3d encoder + small transposed-conv decoder reconstructing the normalised patch from the embedding."""

    def __init__(self, in_channels: int = 1, embed_dim: int = 16, size_vox: int = 32,
                 widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        factor = 2 ** len(widths)
        if size_vox % factor:
            raise ValueError(f"size_vox {size_vox} must be divisible by {factor} ({len(widths)} stride-2 stages)")
        self.encoder = SECNN3d(in_channels, embed_dim, widths)
        self.base = size_vox // factor
        rev = tuple(reversed(widths))
        self.project = nn.Sequential(nn.Linear(embed_dim, rev[0] * self.base**3), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(rev, rev[1:] + (in_channels,)):
            layers.append(nn.ConvTranspose3d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if c_out != in_channels:
                layers.extend([nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)])
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw patches -> (reconstruction of the normalised patches, embeddings)."""
        z = self.encoder(x)
        h = self.project(z).view(z.shape[0], -1, self.base, self.base, self.base)
        return self.decoder(h), z


def fit_volume_autoencoder(
    patches: np.ndarray,
    embed_dim: int = 16,
    epochs: int = 40,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    widths: tuple[int, ...] = (8, 16, 32),
    history: list[float] | None = None,
) -> SECNN3d:
    """Train a VolumeAutoencoder on raw patches [N, C, D, H, W] (MSE on standardised voxels); return its encoder.

    Label-free. On CUDA runs under the mixed-precision policy (``fusion.device.autocast``). The mean training
    loss of every epoch is appended to `history` when a list is passed.
    """
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim != 5 or x.shape[2] != x.shape[3] or x.shape[3] != x.shape[4]:
        raise ValueError(f"patches must be [N, C, D, H, W] with cubic patches, got shape {x.shape}")
    torch.manual_seed(seed)
    dev = _device(device)
    model = VolumeAutoencoder(x.shape[1], embed_dim, x.shape[2], widths).to(dev)
    mean = x.mean(axis=(0, 2, 3, 4))
    std = x.std(axis=(0, 2, 3, 4)) + 1e-6
    model.encoder.input_mean.copy_(torch.from_numpy(mean))
    model.encoder.input_std.copy_(torch.from_numpy(std))
    data = torch.from_numpy(x).to(dev)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator).to(dev)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = data[order[start:start + batch_size]]
            if len(batch) < 2:  # BatchNorm needs more than one sample
                continue
            with autocast(dev):
                recon, _ = model(batch)
                loss = nn.functional.mse_loss(recon.float(), model.encoder.normalise(batch))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        if history is not None:
            history.append(total / len(data))
    encoder = model.encoder.eval()
    return encoder


@torch.no_grad()
def embed_volumes(encoder: SECNN3d, patches: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings [N, embed_dim] (float32) of raw patches [N, C, D, H, W] with a fitted encoder (eval mode)."""
    x = torch.from_numpy(np.asarray(patches, dtype=np.float32))
    if x.ndim != 5 or x.shape[1] != encoder.in_channels:
        raise ValueError(f"patches must be [N, {encoder.in_channels}, D, H, W], got shape {tuple(x.shape)}")
    encoder.eval()
    dev = next(encoder.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        with autocast(dev):
            out.append(encoder(x[start:start + batch_size].to(dev)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.embed_dim), dtype=np.float32)
