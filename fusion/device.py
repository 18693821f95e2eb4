"""The one device helper: which torch device to run on, and the one mixed-precision policy.

The policy: bfloat16 autocast on CUDA, nothing on CPU (float32, so CPU results never depend on it).
bfloat16 keeps float32's exponent range, so no gradient scaling (GradScaler) is needed. Every training
and inference loop enters ``autocast(device, enabled)``; none builds its own ``torch.autocast``.
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPE = torch.bfloat16  # the mixed-precision dtype on CUDA


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to use: the one asked for, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision (bfloat16 autocast) on CUDA when ``enabled``; a no-op context otherwise (always on CPU)."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=AMP_DTYPE)
    return contextlib.nullcontext()
