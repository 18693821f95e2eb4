"""Default per-modality encoders and the encoder contract.

Contract for every encoder module: ``encoder(x)`` maps vectors [B, d] and
``encoder(x, mask)`` maps bags [B, T, d] with a bool instance mask [B, T] to an
embedding [B, embed_dim]. Richer encoders (gated-attention MIL for slides,
self-normalising MLP for expression) are built elsewhere and passed in as
``encoder_factories: {modality: in_dim -> nn.Module}``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fusion.errors import FusionConfigError

EncoderFactory = Callable[[int], nn.Module]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid instances of bags x [B, T, d] under a bool mask [B, T] -> [B, d] (0 for empty bags)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class MLPEncoder(nn.Module):
    """Two-layer MLP encoder; bags [B, T, d] are masked-mean pooled over instances first."""

    def __init__(self, in_dim: int, embed_dim: int = 32, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if in_dim < 1 or embed_dim < 1 or hidden < 1:
            raise FusionConfigError(f"MLPEncoder: in_dim, embed_dim, hidden must be >= 1, got {in_dim}, {embed_dim}, {hidden}")
        self.in_dim, self.embed_dim = in_dim, embed_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed vectors [B, d] or masked bags [B, T, d] -> [B, embed_dim]."""
        if x.dim() == 3:
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            x = masked_mean(x, mask)
        return self.net(x)


def _probe_out_dim(encoder: nn.Module, in_dim: int, is_bag: bool, name: str) -> int:
    """Embedding size of ``encoder`` found by one eval-mode forward on zeros."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            param = next(encoder.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            if is_bag:
                x = torch.zeros(2, 3, in_dim, device=device)
                out = encoder(x, torch.ones(2, 3, dtype=torch.bool, device=device))
            else:
                out = encoder(torch.zeros(2, in_dim, device=device))
    except Exception as exc:  # a factory module that breaks the contract
        kind = "encoder(x [B,T,d], mask [B,T])" if is_bag else "encoder(x [B,d])"
        raise FusionConfigError(f"encoder for modality '{name}' does not accept {kind}: {exc}") from exc
    finally:
        encoder.train(was_training)
    if out.dim() != 2 or out.shape[0] != 2:
        raise FusionConfigError(f"encoder for modality '{name}' must return [B, embed_dim], returned shape {tuple(out.shape)}")
    return int(out.shape[1])


def build_encoder(
    name: str,
    in_dim: int,
    is_bag: bool,
    embed_dim: int = 32,
    hidden: int = 64,
    dropout: float = 0.1,
    factory: EncoderFactory | None = None,
) -> nn.Module:
    """Encoder for modality ``name`` returning [B, embed_dim]: ``factory(in_dim)`` (+ a linear map if its
    size differs) or, without a factory, an MLPEncoder (masked mean then MLP for bags)."""
    if factory is None:
        return MLPEncoder(in_dim, embed_dim=embed_dim, hidden=hidden, dropout=dropout)
    encoder = factory(in_dim)
    if not isinstance(encoder, nn.Module):
        raise FusionConfigError(f"encoder factory for modality '{name}' returned {type(encoder).__name__}, expected nn.Module")
    out_dim = _probe_out_dim(encoder, in_dim, is_bag, name)
    if out_dim == embed_dim:
        return encoder
    return _Projected(encoder, out_dim, embed_dim)


class _Projected(nn.Module):
    """A contract encoder followed by a linear map to ``embed_dim``."""

    def __init__(self, encoder: nn.Module, out_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(out_dim, embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(x) if mask is None else self.encoder(x, mask)
        return self.proj(z)
