"""Pixel operations shared by tissue detection and tiling: alpha removal and exact area resizing."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Drop alpha from RGBA uint8 [...,4]; fully transparent pixels (outside the scanned area) become white."""
    rgb = np.array(rgba[..., :3], dtype=np.uint8, copy=True)
    rgb[rgba[..., 3] == 0] = 255
    return rgb


@lru_cache(maxsize=64)
def _area_weights(n_out: int, n_in: int):
    """Sparse [n_out, n_in] exact area-averaging weights: overlap of each output pixel's span with each
    input pixel, divided by the span (rows sum to 1)."""
    import scipy.sparse as sp

    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    rows, cols, vals = [], [], []
    width = int(np.ceil(scale)) + 1  # input pixels one output pixel can touch
    for k in range(width):
        j = np.floor(edges[:-1]).astype(np.int64) + k
        ok = j < n_in
        overlap = np.minimum(edges[1:], j + 1) - np.maximum(edges[:-1], j)
        ok &= overlap > 1e-12
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        vals.append(overlap[ok] / scale)
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_out, n_in))


def area_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize uint8 [H,W,C] to [height,width,C] by exact pixel-area averaging (OpenCV's INTER_AREA for
    downsampling; any ratio, fractional ones included), rounded to uint8."""
    h, w, c = rgb.shape
    wy, wx = _area_weights(height, h), _area_weights(width, w)
    x = wy @ rgb.reshape(h, w * c).astype(np.float32)  # [height, w*c]
    x = x.reshape(height, w, c).transpose(1, 0, 2).reshape(w, height * c)
    out = (wx @ x).reshape(width, height, c).transpose(1, 0, 2)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
