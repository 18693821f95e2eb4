"""A cohort for federated training: the patient-indexed embeddings a `fusionrx run` wrote into its store and
the diagnosis labels from the catalog's clinical table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fusion.errors import FusionDataError

LABEL = "primary_diagnosis"


def load_store_cohort(catalog_path: str | Path, store_path: str | Path, label: str = LABEL,
                      run_if_missing: bool = True) -> tuple[dict[str, pd.DataFrame], pd.Series]:
    """(modality -> features, patient -> label); runs the pipeline first when the store has no embeddings."""
    from flows.catalog.schema import load_catalog
    from omics.gdc import read_clinical

    emb = Path(store_path) / "embeddings"
    if not any(emb.glob("*.parquet")) and run_if_missing:
        from flows.pipeline import run_pipeline

        run_pipeline(catalog_path, store_path)
    frames = {p.stem: pd.read_parquet(p) for p in sorted(emb.glob("*.parquet"))}
    if not frames:
        raise FusionDataError(f"{emb}: no embeddings (run `fusionrx run --catalog {catalog_path} --store {store_path}`)")
    catalog = load_catalog(catalog_path)
    clinical = read_clinical(catalog.by_modality("clinical").path)
    if label not in clinical.columns:
        raise FusionDataError(f"{catalog.by_modality('clinical').path}: no column '{label}' for the federated labels")
    frames = {k: v.set_axis(v.index.astype(str)) for k, v in frames.items()}
    return frames, clinical[label].dropna().rename(index=str)
