"""Gated attention multiple-instance pooling (Ilse, Tomczak & Welling 2018): a bag of tile features -> a slide vector."""

from __future__ import annotations

import torch
from torch import nn


class GatedAttentionMIL(nn.Module):
    """Slide encoder: instances [B,T,in_dim] (+ mask [B,T]) -> attention-weighted embedding [B,embed_dim].

    h_t = ReLU(W x_t); a_t = softmax_t(w^T (tanh(V h_t) * sigmoid(U h_t))) over the instances whose mask is
    True; z = sum_t a_t h_t. Padded instances (mask False) get exactly zero weight, whatever their values,
    and a bag with no valid instance embeds to zeros.
    """

    def __init__(self, in_dim: int, embed_dim: int = 32, attn_dim: int = 32, dropout: float = 0.1):
        super().__init__()
        self.in_dim = int(in_dim)
        self.embed_dim = int(embed_dim)
        self.instance = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(embed_dim, attn_dim)
        self.attn_u = nn.Linear(embed_dim, attn_dim)
        self.attn_w = nn.Linear(attn_dim, 1)

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"expected instances [B,T,{self.in_dim}], got {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.shape != x.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match instances {tuple(x.shape[:2])}")
        mask = mask.to(torch.bool)
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))  # padding never leaks
        h = self.instance(x)
        logits = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1).float()
        logits = logits.masked_fill(~mask, float("-inf"))
        # softmax over valid instances; all-padding bags give zeros instead of NaN
        top = logits.max(dim=1, keepdim=True).values
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        weights = torch.exp(logits - top) * mask
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return h, weights, mask

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights [B,T] (each bag's valid weights sum to 1; masked instances get 0)."""
        return self._embed(x, mask)[1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bag embedding [B, embed_dim] of instances x [B,T,in_dim] with boolean mask [B,T] (True = real)."""
        h, weights, mask = self._embed(x, mask)
        h = torch.where(mask[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        return torch.einsum("bt,btd->bd", weights.to(h.dtype), h)


def pad_bags(bags: list, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags of different length ([T_i,d] arrays/tensors) into x [B,T_max,d] (zero-padded) and mask [B,T_max]."""
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    tensors = [torch.as_tensor(b, dtype=dtype) for b in bags]
    dims = {t.shape[-1] for t in tensors}
    if len(dims) != 1 or any(t.dim() != 2 for t in tensors):
        raise ValueError(f"bags must all be [T_i, d] with one d, got shapes {[tuple(t.shape) for t in tensors]}")
    t_max = max(1, max(t.shape[0] for t in tensors))
    x = torch.zeros(len(tensors), t_max, dims.pop(), dtype=dtype)
    mask = torch.zeros(len(tensors), t_max, dtype=torch.bool)
    for i, t in enumerate(tensors):
        x[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return x, mask
