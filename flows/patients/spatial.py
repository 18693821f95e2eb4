"""The spatial section of a patient report: every spot of the patient's processed spatial sample, its tumour
region and the genes most enriched there; for a new patient (``report --new``), the Visium sample of their
folder processed as the run processes one and scored against the cohort's stored reference (the tumour
signature and the pseudo-bulk's principal axes, flows.stages.spatial_pseudobulk.pseudobulk_reference), so the
model gets the same spatial features a cohort patient's sample gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.errors import SpatialError

TOP_SPATIAL_GENES = 10  # genes most enriched in the patient's spatial tumour region
TUMOUR_REGION_KEY = "tumour_region"  # = flows.stages.spatial_pseudobulk.TUMOUR_REGION_KEY (that module loads scanpy)
REFERENCE_KEY = "spatial_reference"  # = flows.stages.spatial_pseudobulk.REFERENCE_KEY


def sample_section(h5ad: Path, res: dict[str, Any], region: np.ndarray | None = None,
                   n_genes: int = TOP_SPATIAL_GENES) -> dict[str, Any]:
    """A processed sample (``h5ad``, and its stage result ``res``: enrichment, slide_link) as the report shows it:
    every spot (barcode, x, y, in the tumour region or not), the tumour-region spots (``region``, default the
    sample's obs['tumour_region']) and the genes most enriched there (log2 fold change vs the other spots).
    Coordinates are slide level-0 px when the sample is linked to its slide (``coords``), else Visium
    full-resolution px."""
    import anndata as ad

    from omics.spaceranger import SLIDE_TRANSFORM_KEY

    adata = ad.read_h5ad(h5ad)
    transform = adata.uns.get(SLIDE_TRANSFORM_KEY)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    if transform is not None:  # = flows.stages.spatial.spots_in_slide_px (not imported: it loads scanpy)
        t = np.asarray(transform, dtype=float)
        xy = xy @ t[:2, :2].T + t[:2, 2]
    if region is None:
        region = (adata.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool) if TUMOUR_REGION_KEY in adata.obs
                  else np.zeros(adata.n_obs, dtype=bool))
    spots = [{"barcode": str(b), "x": float(x), "y": float(y), "tumour": bool(t)}
             for b, (x, y), t in zip(adata.obs_names, xy, region)]
    enr = res.get("enrichment")
    top = [] if enr is None else [{"gene": str(g), "log2fc": float(r["log2_fold_change"]), "fdr": float(r["fdr"])}
                                  for g, r in enr.sort_values("log2_fold_change", ascending=False,
                                                              kind="stable").head(n_genes).iterrows()]
    return {"sample": str(h5ad), "coords": "slide_level0_px" if transform is not None else "visium_fullres_px",
            "slide_link": res.get("slide_link"), "n_spots": int(adata.n_obs),
            "tumour_spots": [{k: s[k] for k in ("barcode", "x", "y")} for s in spots if s["tumour"]],
            "spots": spots, "top_genes": top}


def spatial_section(ps: Any, pid: str, n_genes: int = TOP_SPATIAL_GENES) -> dict[str, Any] | None:
    """The spatial section of a cohort patient (None without a processed sample in STORE/spatial/<patient>/)."""
    if pid not in ps.spatial:
        return None
    from flows.store.artifacts import load_pickle

    folder = ps.spatial[pid]
    res = load_pickle(folder / "result.pkl")
    return sample_section(folder / Path(res["h5ad"]).name, res, n_genes=n_genes)


def find_spatial(folder: Path) -> Path | None:
    """A new patient's spatial sample in their folder: a Space Ranger output folder, else a Visium-like .h5ad
    (None when there is neither)."""
    from omics.spaceranger import is_spaceranger_folder

    folder = Path(folder)
    dirs = sorted(d for d in [folder, *folder.rglob("*")] if d.is_dir() and is_spaceranger_folder(d))
    if dirs:
        return dirs[0]
    files = sorted(folder.rglob("*.h5ad"))
    return files[0] if files else None


def spatial_reference(ps: Any) -> dict[str, Any] | None:
    """The cohort's spatial reference (the attrs of STORE/embeddings/spatial.parquet), None when the store has
    no spatial features or was written before they carried it."""
    frame = ps.embeddings.get("spatial")
    return None if frame is None else frame.attrs.get(REFERENCE_KEY)


def new_patient_spatial(ps: Any, pid: str, sample: Path, features_h5: Path | None, cfg: dict[str, Any],
                        work: Path) -> tuple[dict[str, Any], pd.Series | None]:
    """A new patient's spatial sample processed as the run's spatial stage processes one
    (flows.stages.spatial.process_spatial_sample, linked to the patient's slide features when given) and
    scored against the cohort's reference: (the spatial section, with ``region_from`` and ``features_note``;
    the spatial features as the cohort's columns, None when the store keeps no reference or the sample cannot
    be scored, the note says why). SpatialError when the sample cannot be read."""
    from flows.stages.spatial import process_spatial_sample
    from flows.stages.spatial_pseudobulk import reference_features

    res = process_spatial_sample(pid, Path(sample), features_h5, work / f"{pid}_spatial.h5ad", cfg)
    h5ad = Path(res["h5ad"])
    reference = spatial_reference(ps)
    features, region, how, note = None, None, None, None
    if reference is None:
        note = (f"{ps.root}: embeddings/spatial.parquet keeps no spatial reference (no spatial features, or a store "
                "written before they kept one): no spatial features for the model")
    else:
        import anndata as ad

        try:
            features, region, how = reference_features(ad.read_h5ad(h5ad), reference)
        except SpatialError as exc:
            note = f"{sample}: not scored against the cohort's spatial reference ({exc})"
    section = sample_section(h5ad, res, region)
    section.update({"region_from": how, "features_note": note})
    return section, features
