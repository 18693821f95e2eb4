"""One gene's expression over a store's spatial samples, drawn as spot maps (a PNG for the web page)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import QueryError

MAX_PANELS = 6
RUN_SAMPLE_FILE = "sample.h5ad"  # `run` writes each processed sample as STORE/spatial/<patient>/sample.h5ad
REGION_KEY = "tumour_region"  # obs column of a processed sample (flows.stages.spatial_pseudobulk.TUMOUR_REGION_KEY)


@dataclass(frozen=True)
class SpotPanel:
    """One sample's spots for one gene: centres `xy` [n, 2] in the Visium image's full-resolution px,
    `expression` [n] as stored in X (log-normalised for samples `run` wrote), the tumour-region mask [n]
    when the sample has one."""

    sample: str
    xy: np.ndarray
    expression: np.ndarray
    tumour_region: np.ndarray | None


def spatial_sample_files(store: str | Path) -> list[tuple[str, Path]]:
    """(sample name, h5ad path) of every spatial sample of the store, sorted by name: the processed samples
    `run` writes (spatial/<patient>/sample.h5ad, named by the patient folder) and flat spatial/<name>.h5ad
    files; temp files and folders (names starting with '.') are left out."""
    root = Path(store) / "spatial"
    found = {f.stem: f for f in root.glob("*.h5ad") if not f.name.startswith(".")}
    found.update({f.parent.name: f for f in root.glob(f"*/{RUN_SAMPLE_FILE}") if not f.parent.name.startswith(".")})
    return sorted(found.items())


def gene_spatial_panels(store: str | Path, gene: str, max_panels: int = MAX_PANELS) -> list[SpotPanel]:
    """`gene` (matched case-insensitively) over up to `max_panels` spatial samples of the store that measure it;
    QueryError when none does."""
    import anndata as ad

    files = spatial_sample_files(store)
    panels = []
    for name, f in files:
        a = ad.read_h5ad(f, backed="r")
        try:
            upper = {str(n).upper(): i for i, n in enumerate(a.var_names)}
            if gene.upper() not in upper or "spatial" not in a.obsm:
                continue
            col = a[:, upper[gene.upper()]].X
            x = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=float).ravel()
            region = a.obs[REGION_KEY].to_numpy(dtype=bool) if REGION_KEY in a.obs.columns else None
            panels.append(SpotPanel(name, np.asarray(a.obsm["spatial"], dtype=float), x, region))
        finally:
            a.file.close()
        if len(panels) >= max_panels:
            break
    if not panels:
        raise QueryError(f"gene {gene!r} is not measured in any spatial sample of {store} ({len(files)} sample(s))")
    return panels


def draw_spatial_panels(panels: list[SpotPanel], gene: str) -> bytes:
    """PNG of the panels side by side: spots coloured by expression, tumour-region spots outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, p in zip(axes[0], panels):
        sc = ax.scatter(p.xy[:, 0], p.xy[:, 1], c=p.expression, s=6, cmap="magma")
        if p.tumour_region is not None and p.tumour_region.any():
            t = p.tumour_region
            ax.scatter(p.xy[t, 0], p.xy[t, 1], s=9, facecolors="none", edgecolors="cyan", linewidths=0.4)
        ax.set_title(p.sample, fontsize=8)
        ax.set_aspect("equal")
        ax.invert_yaxis()  # image pixel rows grow downwards
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    outlined = any(p.tumour_region is not None for p in panels)
    fig.suptitle(f"{gene}: normalised expression per spot" + (" (tumour region outlined)" if outlined else ""),
                 fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def gene_spatial_png(store: str | Path, gene: str, max_panels: int = MAX_PANELS) -> bytes:
    """PNG of `gene` over up to `max_panels` spatial samples of the store (spots in the Visium image's own
    pixel space, coloured by normalised expression); QueryError when no sample measures the gene."""
    return draw_spatial_panels(gene_spatial_panels(store, gene, max_panels), gene)
