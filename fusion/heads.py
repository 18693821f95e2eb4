"""Task heads: output sizes, losses and output -> prediction transforms for each task.

Tasks: ``binary`` (one logit, binary cross-entropy), ``multiclass`` (C logits,
cross-entropy), ``regression`` (k outputs on standardised targets, MSE; e.g.
imaging phenotypes), ``survival`` (one log-hazard, Cox partial likelihood
with Breslow ties) and ``survival_nll`` (MCAT's discrete-time head: one hazard logit per
time bin, labels (bin index, event); see fusion.survival_heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fusion.errors import FusionConfigError
from fusion.survival_heads import nll_risk, nll_surv_loss

TASKS = ("binary", "multiclass", "regression", "survival", "survival_nll")
SURVIVAL_TASKS = ("survival", "survival_nll")


def check_task(task: str) -> str:
    """``task`` if known, else FusionConfigError listing the known tasks."""
    if task not in TASKS:
        raise FusionConfigError(f"unknown task '{task}'; known: {list(TASKS)}")
    return task


def cox_ph_loss(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), mean over events; 0 (with graph) if no event.

    ``log_risk`` [N] log-hazard ratios, ``time`` [N] survival/censoring times, ``event`` bool [N].
    Risk set of i = all j with time_j >= time_i.
    """
    log_risk = log_risk.reshape(-1).float()
    time = time.reshape(-1).to(log_risk.device, torch.float32)
    event = event.reshape(-1).to(log_risk.device, torch.bool)
    if not bool(event.any()):
        return log_risk.sum() * 0.0
    order = torch.argsort(time, descending=True)
    r_sorted = log_risk[order]
    log_cum = torch.logcumsumexp(r_sorted, dim=0)  # log sum over the i+1 largest times
    t_asc = torch.sort(time).values
    n_at_risk = time.numel() - torch.searchsorted(t_asc, time, right=False)  # count of time_j >= time_i
    log_denominator = log_cum[n_at_risk - 1]
    return -(log_risk - log_denominator)[event].sum() / event.sum()


def task_loss(task: str, outputs: torch.Tensor, y: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Training loss of ``outputs`` [B, n_outputs] against labels (regression targets already standardised)."""
    outputs = outputs.float()
    if task == "binary":
        return F.binary_cross_entropy_with_logits(outputs[:, 0], y.float())
    if task == "multiclass":
        return F.cross_entropy(outputs, y.long())
    if task == "regression":
        return F.mse_loss(outputs, y.float().reshape(outputs.shape))
    if task == "survival":
        time, event = y
        return cox_ph_loss(outputs[:, 0], time, event)
    if task == "survival_nll":
        bins, event = y
        return nll_surv_loss(outputs, bins, event)
    raise FusionConfigError(f"unknown task '{task}'; known: {list(TASKS)}")


def outputs_to_predictions(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """Model outputs -> predictions: P(y=1) [B] (binary), class probabilities [B, C] (multiclass),
    targets [B] or [B, k] in standardised units (regression), log-hazard risk [B] (survival),
    -sum(S) risk [B] (survival_nll)."""
    outputs = outputs.float()
    if task == "binary":
        return torch.sigmoid(outputs[:, 0])
    if task == "multiclass":
        return torch.softmax(outputs, dim=1)
    if task == "survival_nll":
        return nll_risk(outputs)
    if task in ("regression", "survival"):
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs
    raise FusionConfigError(f"unknown task '{task}'; known: {list(TASKS)}")
