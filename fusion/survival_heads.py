"""MCAT's discrete-time survival head: time bins from the training fold, NLL loss, risk = -sum(S).

As in MCAT (Chen et al. 2021, ``utils/utils.py``: ``NLLSurvLoss``): the model outputs one logit
per time bin, hazards h_k = sigmoid(logit_k), survival S_k = prod_{j<=k} (1 - h_j); an uncensored
patient in bin y contributes -log S_{y-1} - log h_y, a censored one -log S_y; the uncensored
term is weighted by ``alpha`` ((1 - alpha) * full + alpha * uncensored). Risk = -sum_k S_k.
"""

from __future__ import annotations

import numpy as np
import torch

from fusion.errors import FusionDataError


def time_bin_edges(time: np.ndarray, event: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Inner cut points [n_bins - 1] at the quantiles of the UNCENSORED training times (MCAT's qcut)."""
    t = np.asarray(time, dtype=np.float64)[np.asarray(event).astype(bool)]
    if t.size < n_bins:
        raise FusionDataError(f"time_bin_edges: need >= {n_bins} events in the training fold, got {t.size}")
    edges = np.quantile(t, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.unique(edges)


def to_bins(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index in [0, len(edges)] of each time (right-closed bins)."""
    return np.searchsorted(edges, np.asarray(time, dtype=np.float64), side="left").astype(np.int64)


def nll_surv_loss(logits: torch.Tensor, bins: torch.Tensor, event: torch.Tensor, alpha: float = 0.4,
                  eps: float = 1e-7) -> torch.Tensor:
    """Discrete-time survival negative log-likelihood, mean over patients.

    ``logits`` [N, K] hazard logits, ``bins`` [N] int bin of the event/censoring time,
    ``event`` bool [N] (True = the event was observed).
    """
    logits = logits.float()
    y = bins.reshape(-1, 1).long().clamp(0, logits.shape[1] - 1)
    c = (~event.reshape(-1, 1).bool()).float()
    hazards = torch.sigmoid(logits)
    s = torch.cumprod(1 - hazards, dim=1)
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # S_{-1} = 1
    s_prev = torch.gather(s_pad, 1, y).clamp_min(eps)
    h_y = torch.gather(hazards, 1, y).clamp_min(eps)
    s_y = torch.gather(s_pad, 1, y + 1).clamp_min(eps)
    uncensored = -(1 - c) * (torch.log(s_prev) + torch.log(h_y))
    censored = -c * torch.log(s_y)
    loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored
    return loss.mean()


def nll_risk(logits: torch.Tensor) -> torch.Tensor:
    """Risk [N] = -sum of the survival curve (higher = earlier event), as MCAT scores its c-index."""
    s = torch.cumprod(1 - torch.sigmoid(logits.float()), dim=1)
    return -s.sum(dim=1)
