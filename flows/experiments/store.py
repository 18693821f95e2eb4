"""Spec inputs from a FusionRx store (`fusionrx run`): per-modality embeddings + the store's clinical table.

Modalities: ``STORE/embeddings/<name>.parquet`` (patient-indexed; the spec's ``modalities`` values
are column globs inside each file, "*" for all). Targets and covariates: ``STORE/clinical/clinical.parquet``
(patient-indexed clinical table, e.g. primary_diagnosis, os_time_days, os_event) joined with
``STORE/imaging/phenotypes.parquet`` when present (imaging phenotypes such as suv_max, mtv_ml as
regression targets). Bag modalities (``modalities: {wsi: {bags: wsi}}``): the store's slide-tile bags
``STORE/wsi/<patient>.h5`` (tile features + hematoxylin density per tile, flows.stages.pathology.slide_bag).
"""

from __future__ import annotations

import fnmatch

import pandas as pd

from flows.experiments.labels import target_table, make_folds, read_splits
from flows.experiments.spec import ExperimentSpec, file_sha256
from fusion.experiment import ExperimentData, Split

CLINICAL = "clinical/clinical.parquet"
PHENOTYPES = "imaging/phenotypes.parquet"


def load_store_experiment(spec: ExperimentSpec) -> tuple[ExperimentData, list[Split], dict[str, str]]:
    """ExperimentData over a store's embeddings, its splits (``folds``) and the input hashes."""

    root = spec.store
    clin_path = root / CLINICAL
    if not clin_path.exists():
        raise spec.fail("store", f"{clin_path} is missing: the store holds no clinical table for the task")
    clinical = pd.read_parquet(clin_path)
    clinical.index = clinical.index.astype(str)
    hashes = {str(clin_path): file_sha256(clin_path)}
    phen_path = root / PHENOTYPES
    if phen_path.exists():
        phen = pd.read_parquet(phen_path)
        phen.index = phen.index.astype(str)
        clinical = clinical.join(phen[[c for c in phen.columns if c not in clinical.columns]], how="left")
        hashes[str(phen_path)] = file_sha256(phen_path)
    target, classes = target_table(clinical, spec)
    features = {}
    for name, glob in spec.modalities.items():
        path = root / "embeddings" / f"{name}.parquet"
        if not path.exists():
            known = sorted(p.stem for p in (root / "embeddings").glob("*.parquet"))
            raise spec.fail(f"modalities.{name}", f"the store has no embeddings/{name}.parquet; it has {known}")
        frame = pd.read_parquet(path)
        frame.index = frame.index.astype(str)
        cols = [c for c in frame.columns if fnmatch.fnmatchcase(str(c), glob)
                and pd.api.types.is_numeric_dtype(frame[c])]
        if not cols:
            raise spec.fail(f"modalities.{name}", f"column glob '{glob}' matches no numeric column of {path}")
        features[name] = frame[cols].astype(float)
        hashes[str(path)] = file_sha256(path)
    bags = {}
    if spec.bags:
        from flows.experiments.bags import store_bags

        bags, bag_hashes, _ = store_bags(spec)
        hashes.update(bag_hashes)
    have = set().union(*[set(f.index) for f in features.values()], *[set(b) for b in bags.values()])
    patients = [p for p in target.index if p in have]  # patients with at least one modality
    missing_cov = [c for c in spec.covariates if c not in clinical.columns]
    if missing_cov:
        raise spec.fail("covariates", f"column '{missing_cov[0]}' not in {clin_path}")
    cov = clinical.loc[patients, spec.covariates].apply(pd.to_numeric, errors="coerce") if spec.covariates else None
    data = ExperimentData(patients=patients, features=features, task=spec.task["kind"],
                          target=target.loc[patients], covariates=cov, classes=classes, bags=bags)
    splits = read_splits(spec, pd.Index(patients)) if spec.splits is not None else make_folds(spec, data)
    return data, splits, hashes
