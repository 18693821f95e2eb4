"""A spec's target (classes, survival time and event, or a value) and its folds: published splits or
stratified repeated K-fold. Shared by table specs (inputs.py) and store specs (store.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

from flows.experiments.spec import ExperimentSpec
from fusion.experiment import ExperimentData, Split


def target_table(df: pd.DataFrame, spec: ExperimentSpec) -> tuple[pd.DataFrame, list[str] | None]:
    task = spec.task
    for key in ("time", "event", "label"):
        if key in task and task[key] not in df.columns:
            raise spec.fail(f"task.{key}", f"column '{task[key]}' not in the table {spec.table}")
    if task["kind"] == "survival":
        t = pd.to_numeric(df[task["time"]], errors="coerce")
        e = pd.to_numeric(df[task["event"]], errors="coerce")
        ok = t.notna() & e.notna()
        e = e[ok].astype(int)
        if not set(e.unique()) <= {0, 1}:
            raise spec.fail("task.event", f"expected 0/1 values, found {sorted(e.unique())[:5]}")
        event = (1 - e) if task.get("event_is_censoring", False) else e
        return pd.DataFrame({"time": t[ok].astype(float), "event": event.astype(bool)}), None
    lab = df[task["label"]].dropna()
    if task["kind"] == "regression":
        v = pd.to_numeric(lab, errors="coerce")
        if v.isna().any():
            raise spec.fail("task.label", f"regression target '{task['label']}' holds non-numbers, e.g. {lab[v.isna()].iloc[0]!r}")
        return pd.DataFrame({"value": v.astype(float)}), None
    counts = lab.astype(str).value_counts()
    if len(counts) < 2:
        raise spec.fail("task.label", f"classification needs >= 2 classes, found {list(counts.index)}")
    single = counts[counts < 2]
    if len(single):
        raise spec.fail("task.label", f"class '{single.index[0]}' has {int(single.iloc[0])} member(s); "
                                      "every class needs >= 2 (drop or merge it)")
    classes = sorted(counts.index)
    return pd.DataFrame({"label": lab.astype(str).map({c: i for i, c in enumerate(classes)}).astype(int)}), classes


def read_splits(spec: ExperimentSpec, patients: pd.Index) -> list[Split]:
    """Published splits (``splits_K.csv`` with train/val id columns, K sorted) checked against the table."""
    files = sorted(spec.splits.glob("splits_*.csv"), key=lambda p: int(p.stem.split("_")[-1]))
    if not files:
        raise spec.fail("splits", f"no splits_K.csv in {spec.splits}")
    out = []
    for f in files:
        s = pd.read_csv(f)
        if not {"train", "val"} <= set(s.columns):
            raise spec.fail("splits", f"{f}: expected columns 'train' and 'val', found {list(s.columns)}")
        tr, va = s["train"].dropna().astype(str).tolist(), s["val"].dropna().astype(str).tolist()
        absent = [i for i in tr + va if i not in patients]
        if absent:
            raise spec.fail("splits", f"{f}: {len(absent)} id(s) absent from the table (or lacking the target), "
                                      f"e.g. {absent[:3]}")
        if set(tr) & set(va):
            raise spec.fail("splits", f"{f}: {len(set(tr) & set(va))} id(s) in both train and val")
        out.append((tr, va))
    return out


def make_folds(spec: ExperimentSpec, data: ExperimentData) -> list[Split]:
    """Stratified (class or event) repeated K-fold over the table's patients from the spec's seed."""
    pats = np.asarray(data.patients)
    if data.task == "classification":
        strata = data.target["label"].to_numpy()
    elif data.task == "survival":
        strata = data.target["event"].to_numpy(int)
    else:
        strata = None
    splitter = (RepeatedKFold if strata is None else RepeatedStratifiedKFold)(
        n_splits=spec.folds, n_repeats=spec.repeats, random_state=spec.seed)
    return [(pats[a].tolist(), pats[b].tolist()) for a, b in splitter.split(np.zeros((len(pats), 1)), strata)]
