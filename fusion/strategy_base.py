"""The fusion-strategy registry and the base class every strategy subclasses (one class + one
``register_strategy`` entry per strategy; ``fusion.strategies`` registers the built-in ones)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fusion.errors import FusionConfigError

FUSION_STRATEGIES: dict[str, type["FusionStrategy"]] = {}

# The neural strategies' ``tune_grid`` (searched by inner CV only with ``options: {tune: true}``, fusion.tuning):
# width (each modality's embedding size) and AdamW's decoupled weight decay, 2 x 2 = 4 candidates, the smaller /
# more regularised value first (ties go to it). With the engine's short full-batch schedule (60 steps at lr 1e-3)
# a weight decay of 1e-2 shrinks the weights by under 0.1%; 3.0 shrinks them by about 16% over a fit.
NEURAL_TUNE_GRID: dict[str, tuple] = {"embed_dim": (8, 16), "weight_decay": (3.0, 1e-2)}


def register_strategy(name: str) -> Callable[[type["FusionStrategy"]], type["FusionStrategy"]]:
    """Class decorator: register a FusionStrategy subclass under ``name``."""

    def deco(cls: type["FusionStrategy"]) -> type["FusionStrategy"]:
        if name in FUSION_STRATEGIES and FUSION_STRATEGIES[name] is not cls:
            raise FusionConfigError(f"fusion strategy '{name}' is already registered ({FUSION_STRATEGIES[name].__name__})")
        if not (isinstance(cls, type) and issubclass(cls, FusionStrategy)):
            raise FusionConfigError(f"register_strategy('{name}'): {cls!r} is not a FusionStrategy subclass")
        FUSION_STRATEGIES[name] = cls
        cls.strategy_name = name
        return cls

    return deco


def get_strategy(name: str) -> type["FusionStrategy"]:
    """The registered strategy class for ``name`` (FusionConfigError listing known names otherwise)."""
    try:
        return FUSION_STRATEGIES[name]
    except KeyError:
        raise FusionConfigError(f"unknown fusion strategy '{name}'; known: {sorted(FUSION_STRATEGIES)}") from None


def build_strategy(name: str, n_modalities: int, embed_dim: int, n_outputs: int, **kwargs: object) -> "FusionStrategy":
    """Instantiate the strategy registered under ``name``."""
    return get_strategy(name)(n_modalities=n_modalities, embed_dim=embed_dim, n_outputs=n_outputs, **kwargs)


def _mlp_head(in_dim: int, hidden: int, n_outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs))


class FusionStrategy(nn.Module):
    """Base class: ``forward(z [B, M, h], present bool [B, M]) -> [B, n_outputs]``.

    Run options a subclass may declare (ExperimentOptions field names, applied by fusion.tuning):
    ``option_overrides`` {field: value}, always applied to its fits; ``option_grid`` {field: candidates}, always
    chosen by inner CV on each outer training fold; ``tune_grid`` {field: candidates}, chosen by inner CV only
    when the experiment asks for it (``ExperimentOptions.tune``), e.g. the neural strategies' NEURAL_TUNE_GRID.
    """

    strategy_name = "base"
    option_overrides: dict = {}
    option_grid: dict = {}
    tune_grid: dict = {}

    def __init__(self, n_modalities: int, embed_dim: int, n_outputs: int) -> None:
        super().__init__()
        if n_modalities < 1 or embed_dim < 1 or n_outputs < 1:
            raise FusionConfigError(
                f"{type(self).__name__}: n_modalities, embed_dim, n_outputs must be >= 1, got {n_modalities}, {embed_dim}, {n_outputs}"
            )
        self.n_modalities, self.embed_dim, self.n_outputs = n_modalities, embed_dim, n_outputs

    def _check(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Validate shapes and zero the embeddings of missing modalities (so no NaN/inf can leak through)."""
        if z.dim() != 3 or z.shape[1:] != (self.n_modalities, self.embed_dim):
            raise FusionConfigError(
                f"{self.strategy_name}: expected embeddings [B, {self.n_modalities}, {self.embed_dim}], got {tuple(z.shape)}"
            )
        if present.shape != z.shape[:2] or present.dtype != torch.bool:
            raise FusionConfigError(f"{self.strategy_name}: expected bool presence {tuple(z.shape[:2])}, got {present.dtype} {tuple(present.shape)}")
        return torch.where(present.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
