"""Stage: precomputed features as fusion modalities (users' own foundation-model embeddings).

Two catalog formats (modality ``features``):
- ``feature_table``: one row per patient (or per slide / sample with a TCGA barcode, averaged per
  patient), an id column and numeric feature columns; parquet, CSV/TSV, also gzipped or a one-member
  zip. The source's name becomes the fusion modality's name.
- ``tile_features_h5``: per-slide HDF5 files as CLAM-style extractors write them (``features``
  [T, d] or [1, T, d], ``coords`` [T, 2] level-0 pixels), listed per patient in ``files``; they are
  the slide (``wsi``) bags of the MIL encoder, so a catalog cannot also have a ``wsi`` slide source.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from flows.catalog.schema import Catalog, Source
from flows.catalog.formats import ID_COLUMNS
from flows.skipped import Skipped
from fusion.errors import FeatureFileError, FusionRxError
from omics.clinical import is_outcome_column



def _read_any_table(path: Path) -> pd.DataFrame:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return pd.read_parquet(path)
    if head[:4] == b"PK\x03\x04":  # open the member by name; archives may name it '../x.csv'
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise FeatureFileError(f"{path}: zip must hold exactly one table, found {len(members)} members")
            with z.open(members[0]) as f:
                return pd.read_csv(f)
    sep = "\t" if path.name.lower().removesuffix(".gz").endswith((".tsv", ".txt")) else ","
    return pd.read_csv(path, sep=sep)


def read_feature_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Patients x numeric features from a precomputed feature table (float32).

    ids that are TCGA barcodes are cut to the 12-character patient id and rows of one patient
    averaged; non-numeric and outcome columns (``omics.clinical.is_outcome_column``: survival, events, labels,
    splits; published tables such as MCAT's carry them beside the features) are dropped: they would leak the label.
    Raises FeatureFileError naming the file and column.
    """
    path = Path(path)
    try:
        df = _read_any_table(path)
    except FeatureFileError:
        raise
    except Exception as exc:
        raise FeatureFileError(f"{path}: cannot read as a feature table: {type(exc).__name__}: {exc}") from exc
    id_column = id_column or next((c for c in df.columns if str(c).lower() in ID_COLUMNS), None)
    if id_column is None or id_column not in df.columns:
        raise FeatureFileError(f"{path}: no id column; expected {id_column or 'one of ' + str(list(ID_COLUMNS))}, "
                               f"found {list(df.columns)[:8]}")
    ids = df[id_column].astype(str).str.strip()
    if ids.eq("").any() or df[id_column].isna().any():
        raise FeatureFileError(f"{path}: column {id_column!r} has empty ids")
    tcga = ids.str.match(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}")
    ids = ids.where(~tcga, ids.str[:12])
    feats = df.drop(columns=[id_column]).drop(columns=[c for c in df.columns if is_outcome_column(c)
                                                       and c != id_column])
    # a CSV written with its pandas row index has an unnamed first column: a row number, not a feature
    feats = feats.drop(columns=[c for c in feats.columns if str(c) == "" or str(c).startswith("Unnamed:")])
    feats = feats.select_dtypes(include=[np.number])
    if feats.shape[1] == 0:
        raise FeatureFileError(f"{path}: no numeric feature columns beside {id_column!r}")
    feats = feats.astype(np.float32).groupby(ids.to_numpy(), sort=True).mean()
    feats.index.name = "patient_id"
    return feats


def read_tile_feature_bag(path: str | Path) -> np.ndarray:
    """One slide's bag [T, d] float32 from a CLAM-style HDF5 (``features`` [T,d] or [1,T,d], ``coords`` [T,2])."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            for key in ("features", "coords"):
                if key not in f:
                    raise FeatureFileError(f"{path}: HDF5 lacks dataset '{key}'; found {sorted(f.keys())}")
            feats = np.asarray(f["features"][()], dtype=np.float32)
            coords = np.asarray(f["coords"][()])
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable HDF5 file: {exc}") from exc
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise FeatureFileError(f"{path}: dataset 'features' must be [T, d] (or [1, T, d]) with T > 0; "
                               f"found shape {feats.shape}")
    if coords.size != 2 * feats.shape[0]:
        raise FeatureFileError(f"{path}: dataset 'coords' {coords.shape} does not give one (x, y) per tile "
                               f"of 'features' {feats.shape}")
    if not np.isfinite(feats).all():
        raise FeatureFileError(f"{path}: dataset 'features' holds NaN or infinite values")
    return feats


def precomputed_features(catalog: Catalog) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray],
                                                      list[Skipped]]:
    """Every ``features`` source: (frames by source name, slide bags by patient, skip records).

    A bad table drops its source; a bad tile-feature file drops that patient's bag.
    """
    frames: dict[str, pd.DataFrame] = {}
    bags: dict[str, np.ndarray] = {}
    skipped: list[Skipped] = []
    for src in catalog.all_of("features"):
        if src.format == "feature_table":
            try:
                frame = read_feature_table(src.path, src.id_column)
                frame.index = [src.patient_id(p) for p in frame.index]
                frames[src.name] = frame
            except FusionRxError as exc:
                skipped.append(Skipped.of(src.name, src.path, exc))
        else:
            bags.update(_tile_bags(src, skipped))
    return frames, bags, skipped


def _tile_bags(src: Source, skipped: list[Skipped]) -> dict[str, np.ndarray]:
    files = src.items() or {src.patient_id(p.stem[:12]): p for p in sorted(src.path.glob(src.pattern or "*.h5"))}
    out: dict[str, np.ndarray] = {}
    for pid, path in files.items():
        try:
            out[pid] = read_tile_feature_bag(path)
        except FusionRxError as exc:
            skipped.append(Skipped.of(src.name, path, exc))
    dims = {b.shape[1] for b in out.values()}
    if len(dims) > 1:
        skipped.append(Skipped(src.name, str(src.path),
                               f"FeatureFileError: tile features of different widths {sorted(dims)}; source dropped"))
        return {}
    return out
