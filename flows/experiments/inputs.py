"""Spec -> ExperimentData + splits: columns picked by glob, one row per patient, labels, published splits."""

from __future__ import annotations

import fnmatch

import pandas as pd

from flows.experiments.labels import target_table, make_folds, read_splits
from flows.experiments.spec import ExperimentSpec, file_sha256, read_table
from fusion.experiment import ExperimentData, Split


def _one_row_per_patient(df: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    if spec.id not in df.columns:
        raise spec.fail("id", f"column '{spec.id}' not in the table {spec.table} (columns: {list(df.columns[:8])}...)")
    df = df.dropna(subset=[spec.id])
    df[spec.id] = df[spec.id].astype(str)
    return df.groupby(spec.id, sort=False).first()  # rows with the same id (e.g. one per slide) are one patient


def _columns(df: pd.DataFrame, spec: ExperimentSpec) -> dict[str, list[str]]:
    out = {}
    for name, glob in spec.modalities.items():
        cols = [c for c in df.columns if fnmatch.fnmatchcase(str(c), glob)]
        if not cols:
            raise spec.fail(f"modalities.{name}", f"column glob '{glob}' matches no column of {spec.table}")
        non_num = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c])]
        if non_num:
            raise spec.fail(f"modalities.{name}", f"columns {non_num[:3]} matched by '{glob}' are not numeric")
        out[name] = cols
    return out


def load_experiment(spec: ExperimentSpec) -> tuple[ExperimentData, list[Split], dict[str, str]]:
    """The spec's ExperimentData, its splits and the SHA-256 of every input file."""
    if spec.store is not None:
        from flows.experiments.store import load_store_experiment

        return load_store_experiment(spec)
    table = read_table(spec.table)
    df = _one_row_per_patient(table, spec)
    cols = _columns(df, spec)
    missing_cov = [c for c in spec.covariates if c not in df.columns]
    if missing_cov:
        raise spec.fail("covariates", f"column '{missing_cov[0]}' not in the table {spec.table}")
    target, classes = target_table(df, spec)
    patients = target.index
    features = {m: df.loc[patients, c].astype(float) for m, c in cols.items()}
    cov = df.loc[patients, spec.covariates].apply(pd.to_numeric, errors="coerce") if spec.covariates else None
    hashes = {str(spec.table): file_sha256(spec.table)}
    bags = {}
    if spec.bags:
        from flows.experiments.bags import table_bags

        bags, bag_hashes, _ = table_bags(spec, table)
        hashes.update(bag_hashes)
    data = ExperimentData(patients=list(patients), features=features, task=spec.task["kind"], target=target,
                          covariates=cov, classes=classes, bags=bags)
    if spec.splits is not None:
        splits = read_splits(spec, patients)
        for f in sorted(spec.splits.glob("splits_*.csv")):
            hashes[str(f)] = file_sha256(f)
    else:
        splits = make_folds(spec, data)
    return data, splits, hashes
