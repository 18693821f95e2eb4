"""Reading FusionRx's own network checkpoints (tile and volume encoders): local files only, checked format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusion.errors import FusionRxError


def read_checkpoint(path: str | os.PathLike, fmt: str, what: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (weights only, on the CPU) whose ``format`` field is ``fmt``;
    FusionRxError naming the file when it is missing, unreadable or another kind of file (``what`` names the
    network in the messages, e.g. 'tile-encoder')."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FusionRxError(f"{path}: {what} checkpoint does not exist (only local files are used)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FusionRxError(f"{path}: cannot read {what} checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise FusionRxError(f"{path}: field 'format' is not {fmt!r}; not a FusionRx {what.replace('-', ' ')}")
    return ckpt
