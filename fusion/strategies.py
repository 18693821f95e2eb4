"""Fusion strategies: per-modality embeddings [B, M, h] + presence [B, M] -> outputs [B, n_outputs].

A new strategy is one subclass of :class:`FusionStrategy` registered with
``@register_strategy("name")``. Every strategy masks missing modalities: the
output for a sample never depends on the embedding of a modality it lacks.

early, late, attention and kronecker declare ``tune_grid = NEURAL_TUNE_GRID`` (width and weight decay): with
``options: {tune: true}`` fusion.tuning picks them by inner CV on every outer training fold.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fusion.errors import FusionConfigError
from fusion.strategy_base import (  # noqa: F401 (re-exported: the registry's public names)
    FUSION_STRATEGIES,
    NEURAL_TUNE_GRID,
    FusionStrategy,
    _mlp_head,
    build_strategy,
    get_strategy,
    register_strategy,
)


@register_strategy("early")
class EarlyFusion(FusionStrategy):
    """Concatenate modality embeddings; a missing slot gets a learned 'missing' embedding and the
    presence mask is appended as explicit indicator features; MLP head."""

    tune_grid = NEURAL_TUNE_GRID

    def __init__(self, n_modalities: int, embed_dim: int, n_outputs: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        self.missing = nn.Parameter(torch.zeros(n_modalities, embed_dim))
        self.head = _mlp_head(n_modalities * embed_dim + n_modalities, hidden, n_outputs, dropout)

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        z = self._check(z, present)
        filled = torch.where(present.unsqueeze(-1), z, self.missing.to(z.dtype).expand_as(z))
        feats = torch.cat([filled.flatten(1), present.to(z.dtype)], dim=1)
        return self.head(feats)


@register_strategy("late")
class LateFusion(FusionStrategy):
    """One head per modality; decisions combined over the present modalities only.

    ``combine="sum"`` (default) adds the heads' outputs with learned non-negative weights, i.e. each
    modality contributes its log-odds / log-hazard evidence, which is the Bayes combination for
    modalities that are conditionally independent given the label (a patient with more agreeing
    modalities gets a more confident decision). ``combine="mean"`` takes a softmax-weighted mean
    instead (e.g. for regression targets). A sample with no modality gets a learned constant.
    """

    tune_grid = NEURAL_TUNE_GRID

    def __init__(self, n_modalities: int, embed_dim: int, n_outputs: int, hidden: int = 32, dropout: float = 0.1,
                 combine: str = "sum") -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        if combine not in ("sum", "mean"):
            raise FusionConfigError(f"LateFusion: combine must be 'sum' or 'mean', got {combine!r}")
        self.combine = combine
        self.heads = nn.ModuleList([_mlp_head(embed_dim, hidden, n_outputs, dropout) for _ in range(n_modalities)])
        self.weight_logits = nn.Parameter(torch.zeros(n_modalities))
        self.empty_output = nn.Parameter(torch.zeros(n_outputs))

    def modality_weights(self, present: torch.Tensor) -> torch.Tensor:
        """Combination weights [B, M], zero for missing modalities: softmax over present ones ('mean',
        rows sum to 1 or 0) or softplus(logit) / softplus(0) per modality ('sum', 1 at initialisation)."""
        mask = present.to(self.weight_logits.dtype)
        if self.combine == "sum":
            w = nn.functional.softplus(self.weight_logits) / math.log(2.0)
            return w.unsqueeze(0) * mask
        w = torch.exp(self.weight_logits - self.weight_logits.max()).unsqueeze(0) * mask
        return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def per_modality_outputs(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Each modality head's outputs [B, M, n_outputs] (rows of missing modalities are meaningless)."""
        z = self._check(z, present)
        return torch.stack([head(z[:, m]) for m, head in enumerate(self.heads)], dim=1)

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        outs = self.per_modality_outputs(z, present)
        w = self.modality_weights(present).to(outs.dtype)
        outs = torch.where(present.unsqueeze(-1), outs, torch.zeros((), dtype=outs.dtype, device=outs.device))
        fused = (w.unsqueeze(-1) * outs).sum(dim=1)
        if self.combine == "sum":
            fused = fused + self.empty_output.to(fused.dtype)
        none = ~present.any(dim=1, keepdim=True)
        return torch.where(none, self.empty_output.to(fused.dtype).expand_as(fused), fused)


@register_strategy("attention")
class AttentionFusion(FusionStrategy):
    """Intermediate fusion: modality tokens + learned modality-type embeddings + a CLS token through a
    small nn.TransformerEncoder; missing modalities are excluded with key_padding_mask; head on CLS."""

    tune_grid = NEURAL_TUNE_GRID

    def __init__(
        self,
        n_modalities: int,
        embed_dim: int,
        n_outputs: int,
        n_layers: int = 1,
        n_heads: int = 2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        if embed_dim % n_heads:
            n_heads = math.gcd(embed_dim, n_heads)
        self.type_embedding = nn.Parameter(torch.randn(n_modalities, embed_dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=embed_dim,
            nhead=n_heads,
            dim_feedforward=2 * embed_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, n_outputs)

    def _tokens(self, z: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._check(z, present)
        tokens = z + self.type_embedding.to(z.dtype)
        cls = self.cls.to(z.dtype).expand(z.shape[0], 1, -1)
        pad = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)  # True = ignore
        return torch.cat([cls, tokens], dim=1), pad

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        tokens, pad = self._tokens(z, present)
        h = self.encoder(tokens, src_key_padding_mask=pad)
        return self.head(self.norm(h[:, 0]))

    @torch.no_grad()
    def cls_attention(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Attention of the CLS token over the modality tokens in the last layer, heads averaged: [B, M]
        (0 for missing modalities; the CLS self-weight is dropped, rows sum to <= 1)."""
        h, pad = self._tokens(z, present)
        weights = None
        for layer in self.encoder.layers:
            x = layer.norm1(h) if layer.norm_first else h
            _, weights = layer.self_attn(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
            h = layer(h, src_key_padding_mask=pad)
        return weights[:, 0, 1:]


@register_strategy("kronecker")
class KroneckerFusion(FusionStrategy):
    """Gated Kronecker fusion (PathomicFusion): each modality embedding is projected to k dims and gated
    by a sigmoid of [own embedding, mean of present embeddings]; a 1 is appended and the outer product
    over modalities taken. A missing modality contributes only the constant 1 (its vector is zeroed).
    k shrinks with M so the product stays <= ~1024 features."""

    tune_grid = NEURAL_TUNE_GRID

    def __init__(
        self,
        n_modalities: int,
        embed_dim: int,
        n_outputs: int,
        k: int | None = None,
        hidden: int = 64,
        dropout: float = 0.3,
        max_product: int = 1024,
    ) -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        if k is None:
            k = max(2, min(16, int(math.floor(max_product ** (1.0 / n_modalities) + 1e-9)) - 1))
        self.k = k
        self.proj = nn.ModuleList([nn.Sequential(nn.Linear(embed_dim, k), nn.GELU()) for _ in range(n_modalities)])
        self.gate = nn.ModuleList([nn.Linear(2 * embed_dim, k) for _ in range(n_modalities)])
        product = (k + 1) ** n_modalities
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            _mlp_head(product + n_modalities * k, hidden, n_outputs, dropout),
        )

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        z = self._check(z, present)
        pf = present.to(z.dtype).unsqueeze(-1)
        context = (z * pf).sum(dim=1) / pf.sum(dim=1).clamp_min(1.0)
        ones = torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)
        fused = ones
        gated_all = []
        for m in range(self.n_modalities):
            zm = z[:, m]
            gated = torch.sigmoid(self.gate[m](torch.cat([zm, context], dim=1))) * self.proj[m](zm)
            gated = gated * pf[:, m]
            gated_all.append(gated)
            vec = torch.cat([gated, ones], dim=1)
            fused = (fused.unsqueeze(2) * vec.unsqueeze(1)).flatten(1)
        return self.head(torch.cat([fused] + gated_all, dim=1))


@register_strategy("single")
class SingleModality(FusionStrategy):
    """One modality only (single-modality baselines): MLP head on its embedding; a sample without it
    gets a learned constant (train/predict replace it with the training-fold prior)."""

    def __init__(self, n_modalities: int, embed_dim: int, n_outputs: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        if n_modalities != 1:
            raise FusionConfigError(f"strategy 'single' takes exactly one modality, got {n_modalities}")
        self.head = _mlp_head(embed_dim, hidden, n_outputs, dropout)
        self.empty_output = nn.Parameter(torch.zeros(n_outputs))

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        z = self._check(z, present)
        out = self.head(z[:, 0])
        return torch.where(present[:, :1], out, self.empty_output.to(out.dtype).expand_as(out))


from fusion import coattention as _coattention  # noqa: E402,F401  registers 'coattention' (instance-level tokens)
from fusion import bilinear as _bilinear  # noqa: E402,F401  registers 'bilinear' (pairwise bilinear terms)
