"""Typed, pinned run configuration (defaults here; overrides from a YAML file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import CatalogError
from flows.ranking import DEFAULT_WEIGHTS


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a pipeline run; the whole object is recorded with the run."""

    seed: int = 0
    # imaging (CT/PET)
    pet_fraction_threshold: float = 0.4
    volume_patch_vox: int = 32
    volume_patch_spacing_mm: float = 2.0
    volume_embed_dim: int = 8
    volume_encoder_epochs: int = 25
    # whole-slide images
    tile_size: int = 64
    target_mpp: float = 1.0
    min_tissue: float = 0.5
    encoder_tiles_per_slide: int = 24
    tile_feature_dim: int = 32
    tile_encoder_epochs: int = 8
    # omics
    n_hvg: int = 50
    spatial_embed_dim: int = 16
    spatial_encoder_epochs: int = 60
    spatial_knn: int = 6
    spatial_panel_genes: int = 100
    # fusion experiments
    strategies: tuple[str, ...] = ("early", "late", "attention", "kronecker")
    single_modalities: tuple[str, ...] = ("ct", "pet", "wsi", "expression", "spatial")
    cv_splits: int = 5
    cv_repeats: int = 2
    fusion_epochs: int = 60
    fusion_lr: float = 3e-3
    fusion_weight_decay: float = 1e-2
    fusion_hidden: int = 16
    fusion_dropout: float = 0.3
    torch_cpu_threads: int = 1  # tiny models: one thread per training beats oversubscribed threads
    modality_dropout: float = 0.2
    embed_dim: int = 16
    survival_experiments: bool = True
    # target ranking
    ranking_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    compounds_per_target: int = 5

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def load_run_config(path: str | Path | None) -> RunConfig:
    """Defaults, overridden by the keys of a YAML file; unknown keys are an error naming the key."""
    if path is None:
        return RunConfig()
    file = Path(path)
    if not file.is_file():
        raise CatalogError(f"{file}: run config file does not exist")
    raw = yaml.safe_load(file.read_text()) or {}
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise CatalogError(f"{file}: unknown run config key(s) {unknown}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()}
    return RunConfig(**values)
