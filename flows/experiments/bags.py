"""Bag modalities of experiment specs: slide-tile bags from a FusionRx store (``STORE/<folder>/<patient>.h5``,
read by flows.stages.pathology.slide_bag) or from a CLAM-style folder of per-slide ``.h5`` / ``.pt`` feature
files for table specs, and the gated-attention MIL encoders the engine uses for them.

A file that cannot be read is reported (logged with its error) and skipped: that patient lacks the modality.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from flows.experiments.spec import ExperimentSpec, file_sha256
from fusion.errors import FusionRxError

log = logging.getLogger(__name__)
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".h5", ".pt")  # stripped from slide ids


def _read(path: Path, reader: Callable[[Path], np.ndarray], skipped: list[tuple[str, str]]) -> np.ndarray | None:
    try:
        return reader(path)
    except (FusionRxError, OSError, ValueError, RuntimeError) as exc:
        log.warning("bag %s skipped: %s", path, exc)
        skipped.append((str(path), str(exc)))
        return None


def store_bags(spec: ExperimentSpec) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str], list]:
    """Every bag modality of a ``store:`` spec: {modality: {patient: [T, d]}}, file hashes, skipped files."""
    from flows.stages.pathology import slide_bag

    out, hashes, skipped = {}, {}, []
    for name, cfg in spec.bags.items():
        folder = spec.store / str(cfg["bags"])
        files = sorted(folder.glob("*.h5")) if folder.is_dir() else []
        if not files:
            raise spec.fail(f"modalities.{name}.bags", f"{folder} holds no <patient>.h5 tile-feature file")
        bags = {}
        for f in files:
            bag = _read(f, slide_bag, skipped)
            if bag is not None:
                bags[f.stem] = bag
                hashes[str(f)] = file_sha256(f)
        out[name] = _nonempty(spec, name, folder, bags)
    return out, hashes, skipped


def read_clam_bag(path: Path) -> np.ndarray:
    """One slide's bag [T, d] from a CLAM-style ``.h5`` (datasets features, coords) or ``.pt`` (tensor [T, d])."""
    if path.suffix == ".pt":
        import torch

        t = torch.load(path, map_location="cpu", weights_only=True)
        a = np.asarray(t.float().numpy() if hasattr(t, "numpy") else t, dtype=np.float32)
        a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
        if a.ndim != 2 or not len(a) or not np.isfinite(a).all():
            raise ValueError(f"{path}: expected a finite tensor [T, d] with T > 0, found shape {a.shape}")
        return a
    from flows.stages.features import read_tile_feature_bag

    return read_tile_feature_bag(path)


def table_bags(spec: ExperimentSpec, table: pd.DataFrame) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str],
                                                                   list]:
    """Every bag modality of a table spec: per-slide files ``FOLDER/<slide>.h5|.pt`` (slide = the row's
    ``slide_column`` value without its extension, or the patient id without it); a patient's slides are
    concatenated into one bag (as MCAT does). Returns (bags, file hashes, skipped files)."""
    out, hashes, skipped = {}, {}, []
    for name, cfg in spec.bags.items():
        folder, col = Path(cfg["bags"]), cfg.get("slide_column")
        if col is not None and col not in table.columns:
            raise spec.fail(f"modalities.{name}.slide_column", f"column '{col}' not in the table {spec.table}")
        rows = table.dropna(subset=[spec.id] + ([col] if col else []))
        slides: dict[str, list[str]] = {}
        for pid, sid in zip(rows[spec.id].astype(str), rows[col].astype(str) if col else rows[spec.id].astype(str)):
            stem = Path(sid).stem if Path(sid).suffix.lower() in SLIDE_SUFFIXES else sid
            if stem not in slides.setdefault(pid, []):
                slides[pid].append(stem)
        bags = {}
        for pid, stems in slides.items():
            parts = []
            for stem in stems:
                f = next((folder / f"{stem}{e}" for e in (".h5", ".pt") if (folder / f"{stem}{e}").exists()), None)
                bag = None if f is None else _read(f, read_clam_bag, skipped)
                if bag is not None:
                    parts.append(bag)
                    hashes[str(f)] = file_sha256(f)
            dims = {p.shape[1] for p in parts}
            if len(dims) > 1:
                raise spec.fail(f"modalities.{name}.bags", f"patient '{pid}': slides with feature sizes {sorted(dims)}")
            if parts:
                bags[pid] = np.concatenate(parts, axis=0)
        out[name] = _nonempty(spec, name, folder, bags)
    return out, hashes, skipped


def _nonempty(spec: ExperimentSpec, name: str, folder: Path, bags: dict) -> dict:
    if not bags:
        raise spec.fail(f"modalities.{name}.bags", f"no readable bag of the spec's patients in {folder}")
    return bags


def mil_encoder_factories(bags: dict[str, Any], embed_dim: int, dropout: float = 0.1) -> dict[str, Callable]:
    """Gated-attention MIL (imaging.mil) encoders for every bag modality: in_dim -> nn.Module."""
    from functools import partial

    from imaging.mil import GatedAttentionMIL

    # partials of the class (not lambdas): the options travel to spawned workers (run_experiment(workers=N))
    return {m: partial(GatedAttentionMIL, embed_dim=embed_dim, attn_dim=embed_dim, dropout=dropout) for m in bags}
