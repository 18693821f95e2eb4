"""FusionModel: one encoder per modality, modality dropout, then a registered fusion strategy."""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import torch
from torch import nn

from fusion.data import MultimodalDataset
from fusion.encoders import EncoderFactory, build_encoder
from fusion.errors import FusionConfigError, FusionDataError
from fusion.heads import check_task
from fusion.strategies import build_strategy, get_strategy

Batch = Mapping[str, Mapping[str, torch.Tensor | None]]


def modality_dropout_mask(present: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly drop present modalities (prob ``p`` each) per sample, never all of a sample's modalities.

    ``present`` bool [B, M] -> bool [B, M] (a subset of ``present``).
    """
    if p <= 0:
        return present
    u = torch.rand(present.shape, device=present.device, generator=generator)
    keep = present & (u >= p)
    # a sample whose present modalities were all dropped keeps one of them, chosen at random
    score = torch.rand(present.shape, device=present.device, generator=generator).masked_fill(~present, -1.0)
    rescue = torch.zeros_like(present).scatter(1, score.argmax(dim=1, keepdim=True), True) & present
    lost_all = ~keep.any(dim=1, keepdim=True)
    return torch.where(lost_all, rescue, keep)


class FusionModel(nn.Module):
    """Encoders keyed by modality + a fusion strategy; forward(batch) -> outputs [B, n_outputs].

    ``batch`` is ``{modality: {'values': [B, d] or [B, T, d], 'mask': bool [B, T] or None,
    'present': bool [B]}}`` (see MultimodalDataset.to_batch). Encoders only ever see the
    rows where the modality is present; in training, modality dropout marks present
    modalities absent at random (never all of a sample's modalities). An instance-level strategy
    (``instance_level = True``, e.g. 'coattention') embeds bag modalities per instance with its own
    ``build_instance_encoder`` (their ``encoder_factories`` entries are then unused) and receives those
    tokens in ``forward``. A strategy with a ``flat_encoder(in_dim, embed_dim)`` classmethod (e.g. 'bilinear':
    a linear map) encodes the flat modalities that have no ``encoder_factories`` entry with it.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        in_dims: Mapping[str, int],
        strategy: str,
        n_outputs: int,
        embed_dim: int = 32,
        encoder_factories: Mapping[str, EncoderFactory] | None = None,
        modality_dropout: float = 0.2,
        bag_modalities: Sequence[str] = (),
        task: str = "binary",
        hidden: int = 64,
        dropout: float = 0.1,
        strategy_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise FusionConfigError(f"FusionModel: modalities must be a non-empty list of unique names, got {self.modalities}")
        missing = [m for m in self.modalities if m not in in_dims]
        if missing:
            raise FusionConfigError(f"FusionModel: no in_dim for modalities {missing}")
        factories = dict(encoder_factories or {})
        unknown = [k for k in factories if k not in self.modalities]
        if unknown:
            raise FusionConfigError(f"FusionModel: encoder_factories for unknown modalities {unknown}; model has {self.modalities}")
        if not 0.0 <= modality_dropout < 1.0:
            raise FusionConfigError(f"FusionModel: modality_dropout must be in [0, 1), got {modality_dropout}")
        self.task = check_task(task)
        self.strategy_name = strategy
        self.embed_dim = embed_dim
        self.n_outputs = n_outputs
        self.modality_dropout = float(modality_dropout)
        self.bag_modalities = [m for m in self.modalities if m in set(bag_modalities)]
        # an instance-level strategy (e.g. 'coattention') gets per-instance tokens of the bag modalities
        cls = get_strategy(strategy)
        self.instance_level = bool(getattr(cls, "instance_level", False))
        flat_encoder = getattr(cls, "flat_encoder", None)  # a strategy's own encoder of flat modalities (bilinear)
        encoders = {}
        for m in self.modalities:
            if self.instance_level and m in self.bag_modalities:
                encoders[m] = cls.build_instance_encoder(int(in_dims[m]), embed_dim, dropout)
            elif flat_encoder is not None and m not in self.bag_modalities and m not in factories:
                encoders[m] = flat_encoder(int(in_dims[m]), embed_dim)
            else:
                encoders[m] = build_encoder(m, int(in_dims[m]), m in self.bag_modalities, embed_dim=embed_dim,
                                            hidden=hidden, dropout=dropout, factory=factories.get(m))
        self.encoders = nn.ModuleDict(encoders)
        kwargs = dict(strategy_kwargs or {})
        if self.instance_level:
            kwargs["bag_slots"] = [j for j, m in enumerate(self.modalities) if m in self.bag_modalities]
        self.strategy = build_strategy(strategy, len(self.modalities), embed_dim, n_outputs, **kwargs)
        # set by fusion.train.fit: prediction for samples with none of the model's modalities,
        # and the regression target standardisation
        self.register_buffer("fallback_prediction", torch.zeros(n_outputs))
        self.register_buffer("target_mean", torch.zeros(n_outputs))
        self.register_buffer("target_std", torch.ones(n_outputs))

    @classmethod
    def for_dataset(
        cls, dataset: MultimodalDataset, modalities: Sequence[str], strategy: str, n_outputs: int, **kwargs: object
    ) -> "FusionModel":
        """A FusionModel sized for ``dataset`` (in_dims and bag modalities read from it)."""
        dataset._check_names(modalities)
        return cls(
            list(modalities),
            dataset.in_dims,
            strategy,
            n_outputs,
            bag_modalities=dataset.bag_modalities,
            **kwargs,
        )

    def presence(self, batch: Batch) -> torch.Tensor:
        """Bool presence [B, M] of the model's modalities in ``batch``."""
        try:
            return torch.stack([batch[m]["present"].to(torch.bool) for m in self.modalities], dim=1)
        except KeyError as exc:
            raise FusionDataError(f"batch lacks modality {exc}; model needs {self.modalities}") from None

    def encode(self, batch: Batch, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, M, embed_dim] (zeros where absent) and presence [B, M] (after modality dropout in training)."""
        if present is None:
            present = self.presence(batch)
            if self.training and self.modality_dropout > 0:
                present = modality_dropout_mask(present, self.modality_dropout)
        z_list = []
        for j, m in enumerate(self.modalities):
            x, mask = batch[m]["values"], batch[m].get("mask")
            rows = present[:, j].nonzero().squeeze(1)
            if rows.numel() == 0:
                z_list.append(torch.zeros(x.shape[0], self.embed_dim, device=x.device))
                continue
            if self.instance_level and m in self.bag_modalities:  # tokens go to the strategy (instance_tokens)
                z_list.append(torch.zeros(x.shape[0], self.embed_dim, device=x.device))
                continue
            xr = x.index_select(0, rows)
            if m in self.bag_modalities or x.dim() == 3:
                if mask is None:
                    raise FusionDataError(f"batch modality '{m}': bag values [B, T, d] need a 'mask'")
                out = self.encoders[m](xr, mask.index_select(0, rows))
            else:
                out = self.encoders[m](xr)
            if out.shape != (rows.numel(), self.embed_dim):
                raise FusionConfigError(f"encoder '{m}' returned {tuple(out.shape)}, expected ({rows.numel()}, {self.embed_dim})")
            z_list.append(out.new_zeros(x.shape[0], self.embed_dim).index_copy(0, rows, out))
        dtype = functools.reduce(torch.promote_types, [z.dtype for z in z_list])
        z = torch.stack([z.to(dtype) for z in z_list], dim=1)
        return z, present

    def forward(self, batch: Batch, present: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs [B, n_outputs] (logits / standardised targets / log-hazard, see fusion.heads).

        ``present`` (bool [B, M]) overrides the batch's presence (used for drop-one-modality analysis).
        """
        z, present = self.encode(batch, present)
        if self.instance_level:
            return self.strategy(z, present, self.instance_tokens(batch))
        return self.strategy(z, present)

    def instance_tokens(self, batch: Batch) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per-instance tokens of the bag modalities for an instance-level strategy:
        {position in ``modalities``: (tokens [B, T, embed_dim], bool mask [B, T])}."""
        out = {}
        for j, m in enumerate(self.modalities):
            if m not in self.bag_modalities:
                continue
            x, mask = batch[m]["values"], batch[m].get("mask")
            if x.dim() != 3 or mask is None:
                raise FusionDataError(f"batch modality '{m}': instance-level strategy needs bags [B, T, d] with a 'mask'")
            out[j] = (self.encoders[m](x, mask), mask.to(torch.bool))
        return out
