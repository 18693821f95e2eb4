"""Published reference results to print beside ours (MCAT's committed ``*_cindex.csv`` files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fusion.errors import SpecError

# MCAT result files: model tag -> (what it is, modalities)
MCAT_MODELS = {"SNNsm": ("MCAT paper: SNN", ["genomic"]), "AMILsm": ("MCAT paper: AMIL", ["wsi"]),
               "MCATsm": ("MCAT paper: MCAT", ["wsi", "genomic"])}


def read_reference(folder: Path, cohort: str) -> list[dict]:
    """Rows {name, strategy='published', modalities, metric='c_index', mean, std, folds=[]} for ``cohort``."""
    rows = []
    files = sorted(Path(folder).glob("*_cindex.csv"))
    if not files:
        raise SpecError(f"key 'reference': no *_cindex.csv in {folder}")
    for f in files:
        tag = f.name.split("_cindex")[0]
        df = pd.read_csv(f)
        proj = df.iloc[:, 0].astype(str).str.lower()
        hit = df[proj == cohort.lower()]
        if hit.empty:
            continue
        what, mods = MCAT_MODELS.get(tag, (f"published: {tag}", []))
        rows.append({"name": what, "strategy": "published", "modalities": mods, "head": None, "metric": "c_index",
                     "mean": float(hit["Val C-Index (Mean)"].iloc[0]), "std": float(hit["Val C-Index (STD)"].iloc[0]),
                     "folds": [], "source": str(f)})
    if not rows:
        raise SpecError(f"key 'reference_cohort': cohort '{cohort}' not found in {folder}")
    return rows
