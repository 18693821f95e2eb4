"""Low-rank bilinear fusion (the ``bilinear`` strategy): an additive model over modalities plus one bilinear
term per pair of modalities, so a label that is an interaction of two modalities (e.g. expression subtype XOR
PET phenotype, which no model additive over modalities can read) is one weight matrix away.

Each flat modality's few principal components (fold preprocessing, ``n_components`` = 2) are mapped by a
*linear* encoder (``flat_encoder``: no hidden layer, no non-linearity) to ``embed_dim`` = r = 2 dimensions; then

    output_o = b_o + sum_m w_{m,o} . z_m + sum_{m<n} z_m^T W_{mn,o} z_n

i.e. a logistic / Cox / linear model on the modality embeddings and their cross-modality products (a full
bilinear form in the modalities' leading PCs). Its regularisation, AdamW's weight decay, is chosen by inner CV
on each outer training fold (``option_grid``, applied by fusion.tuning), never on the outer folds. A missing
modality has z_m = 0 (its PCs at the training mean), so it contributes neither its linear term nor any of its
pair terms: a sample's output never depends on the values of a modality it lacks.

Why 2 PCs: on the interaction cohort (64 patients, 4 folds x 2 repeats, seed 2) 4 PCs per modality with r in
{2, 4} gave AUC 0.63, 2 PCs 0.73 (scikit-learn's logistic on the same PCs and their products: 0.80 with 2 PCs,
0.73 with 4); offered n_components in {2, 4}, the inner CV picked 2 in 8 of 8 folds, at twice the cost.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from fusion.strategy_base import FusionStrategy, register_strategy


class LinearEncoder(nn.Module):
    """Vectors [B, d] -> [B, embed_dim] by one linear map (bags [B, T, d] are masked-mean pooled first)."""

    def __init__(self, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings [B, embed_dim]."""
        if x.dim() == 3:
            from fusion.encoders import masked_mean

            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
            x = masked_mean(x, mask)
        return self.proj(x)


@register_strategy("bilinear")
class BilinearFusion(FusionStrategy):
    """Per-modality linear terms + one bilinear form per modality pair (see the module docstring).

    Class attributes read by fusion.tuning (run options of this strategy, ExperimentOptions field names):
    ``option_overrides`` always apply (2 PCs per modality, r = 2, full-batch steps enough to converge, no
    modality dropout: dropping one side of a pair would hide the interaction it must learn); ``option_grid``
    (weight decay) is searched by inner CV on every outer training fold.
    """

    option_overrides = {"n_components": 2, "embed_dim": 2, "epochs": 80, "lr": 0.03, "modality_dropout": 0.0}
    option_grid = {"weight_decay": (0.1, 1.0)}

    @classmethod
    def flat_encoder(cls, in_dim: int, embed_dim: int) -> nn.Module:
        """The encoder of a flat modality: one linear map (FusionModel uses it instead of its MLP encoder)."""
        return LinearEncoder(in_dim, embed_dim)

    def __init__(self, n_modalities: int, embed_dim: int, n_outputs: int) -> None:
        super().__init__(n_modalities, embed_dim, n_outputs)
        self.pairs = list(itertools.combinations(range(n_modalities), 2))
        self.linear = nn.Linear(n_modalities * embed_dim, n_outputs)
        # W_{mn,o} [n_pairs, n_outputs, r, r], small at initialisation so training starts near the additive model
        self.bilinear = nn.Parameter(torch.randn(len(self.pairs), n_outputs, embed_dim, embed_dim) * 0.01)

    def forward(self, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Outputs [B, n_outputs]."""
        z = self._check(z, present)
        out = self.linear(z.flatten(1))
        w = self.bilinear.to(z.dtype)
        for p, (m, n) in enumerate(self.pairs):
            out = out + torch.einsum("bi,oij,bj->bo", z[:, m], w[p], z[:, n])
        return out
