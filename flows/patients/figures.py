"""Helpers of the patient-report renderers: matplotlib figures without pyplot state, PNG bytes, report keys."""

from __future__ import annotations

import io
from typing import Any

from fusion.errors import FusionDataError


def need(obj: Any, key: str, where: str) -> Any:
    """obj[key], or FusionDataError naming where the key was expected."""
    if not isinstance(obj, dict) or key not in obj:
        raise FusionDataError(f"patient report: {where} lacks key {key!r}")
    return obj[key]


def figure(width_in: float, height_in: float):
    """A matplotlib Figure on the Agg canvas (no pyplot state: safe in API worker threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
