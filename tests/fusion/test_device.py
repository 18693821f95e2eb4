"""The one mixed-precision policy: bfloat16 autocast on CUDA only (no GradScaler needed), nothing on CPU."""

import contextlib
import warnings

import torch

from fusion.device import autocast, resolve_device


def test_cpu_and_disabled_are_no_ops():
    for ctx in (autocast(torch.device("cpu")), autocast(torch.device("cpu"), enabled=False),
                autocast(torch.device("cuda"), enabled=False)):
        assert isinstance(ctx, contextlib.nullcontext)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    with autocast(resolve_device("cpu")):
        y = x @ x
    assert y.dtype == torch.float32 and torch.equal(y, x @ x)


def test_cuda_gets_bfloat16_autocast():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # building a CUDA autocast on a machine without CUDA warns and disables it
        ctx = autocast(torch.device("cuda:0"))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
