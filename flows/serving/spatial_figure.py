"""One gene's expression over a store's spatial samples, drawn as spot maps (a PNG for the web page)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fusion.errors import QueryError

MAX_PANELS = 6


def gene_spatial_png(store: str | Path, gene: str, max_panels: int = MAX_PANELS) -> bytes:
    """PNG of `gene` over up to `max_panels` spatial samples of the store (spots in the Visium image's own
    pixel space, coloured by normalised expression); QueryError when no sample measures the gene."""
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted((Path(store) / "spatial").glob("*.h5ad"))
    panels = []
    for f in files:
        a = ad.read_h5ad(f, backed="r")
        names = [str(v) for v in a.var_names]
        upper = {n.upper(): i for i, n in enumerate(names)}
        if gene.upper() in upper and "spatial" in a.obsm:
            col = a[:, upper[gene.upper()]].X
            x = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=float).ravel()
            panels.append((f.stem, np.asarray(a.obsm["spatial"], dtype=float), x))
        a.file.close()
        if len(panels) >= max_panels:
            break
    if not panels:
        raise QueryError(f"gene {gene!r} is not measured in any spatial sample of {store} ({len(files)} sample(s))")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, xy, x) in zip(axes[0], panels):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=x, s=6, cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_aspect("equal")
        ax.invert_yaxis()  # image pixel rows grow downwards
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(f"{gene}: normalised expression per spot", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
