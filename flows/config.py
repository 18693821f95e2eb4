"""Typed, pinned run configuration (defaults here; overrides from a YAML file)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import CatalogError
from flows.results.ranking import DEFAULT_WEIGHTS


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a pipeline run; the whole object is recorded with the run."""

    seed: int = 0
    # labels: clinical columns of a plain clinical table -> diagnosis / time / event (omics.clinical.ClinicalLabels;
    # {} auto-detects the usual spellings; GDC clinical files keep their own columns)
    labels: dict[str, Any] = field(default_factory=dict)
    min_patients: int = 20  # experiments need at least this many labelled patients, else they are skipped
    # imaging (CT/PET)
    # roi: ROI-name patterns (shell-style, case-insensitive, first match wins) for both grids, or {pet: [...],
    # ct: [...]}; None: the automatic lesion. roi_fallback: what a patient without a matching ROI gets
    roi: Any = None
    roi_fallback: str = "auto"
    radiomics: bool = False  # IBSI morphology / intensity / histogram features of the ROI in the phenotype rows
    radiomics_texture: bool = False  # and the six IBSI texture families (mirp; ~20 s per ROI: off by default)
    pet_fraction_threshold: float = 0.4
    volume_patch_vox: int = 32
    volume_patch_spacing_mm: float = 2.0
    volume_embed_dim: int = 8
    # volume_encoder: "builtin" (the shipped, frozen CT / PET encoders: a run only encodes) or "cohort" (trained
    # on the run's own patches for volume_encoder_epochs; every patient's embedding then depends on the cohort)
    volume_encoder: str = "builtin"
    volume_encoder_epochs: int = 25
    # whole-slide images
    # tile_encoder: "builtin" (the shipped tile CNN, frozen: imaging/weights), "cohort" (the same CNN trained on
    # the run's own tiles for tile_encoder_epochs) or {kind: timm | callable | builtin, model, weights, ...}
    # (imaging.pretrained_encoder.TileEncoderSpec); weights only from the given file
    tile_encoder: Any = "builtin"
    tile_size: int = 64
    target_mpp: float = 1.0
    min_tissue: float = 0.5
    encoder_tiles_per_slide: int = 24
    # decode every tile of every level of each slide at ingest (imaging.slide_summary.require_intact_slide):
    # a slide with a damaged tile is skipped, the tiles named; off by default (a full decode of each slide)
    verify_slides: bool = False
    tile_feature_dim: int = 32
    tile_encoder_epochs: int = 8
    # omics
    n_hvg: int = 50
    spatial_embed_dim: int = 16
    spatial_encoder_epochs: int = 60
    spatial_knn: int = 6
    spatial_panel_genes: int = 100
    spatial_pseudobulk_genes: int = 100  # genes most variable across the tumour-region pseudo-bulks
    spatial_pseudobulk_pcs: int = 2  # principal components of that pseudo-bulk in the spatial features
    spatial_graph_features: bool = False  # add the DGI spot-graph embedding to the spatial features
    # fusion experiments
    strategies: tuple[str, ...] = ("early", "late", "attention", "kronecker", "experts")
    single_modalities: tuple[str, ...] = ("ct", "pet", "wsi", "expression", "spatial")
    cv_splits: int = 5
    # one 5-fold CV by default (half the fusion stage of two repeats; set 2+ for tighter estimates)
    cv_repeats: int = 1
    fusion_epochs: int = 60
    fusion_lr: float = 3e-3
    fusion_weight_decay: float = 1e-2
    fusion_hidden: int = 16
    fusion_dropout: float = 0.3
    torch_cpu_threads: int = 1  # tiny models: one thread per training beats oversubscribed threads
    fusion_workers: int = 2  # processes sharing the fusion experiments (results do not depend on it)
    fusion_batch_size: int | None = None  # None: full batch; slide bags are padded only inside a mini-batch
    # slide bags are cut to this many random tiles at each training step (MIL instance sampling: 1.9x faster
    # slide models on the demo, AUC unchanged within noise); predictions use every tile. None: whole bags
    fusion_bag_instances: int | None = 32
    modality_dropout: float = 0.2
    embed_dim: int = 16
    survival_experiments: bool = True
    # survival fusion strategies also run with inner-CV modality selection (survival signal often sits in one
    # modality: fusion then keeps to it instead of diluting it with the others)
    survival_select: tuple[str, ...] = ("late",)
    # nested selection across every model of an experiment (fusion/nested.py): the rows best and best:single, and
    # the deployed model is the configuration best chooses. Off by default: it costs candidates x inner folds x
    # outer folds fits (the demo run's fusion stage 2-3x); without it the deployed model is the row (neural or
    # classical: baseline, experts) with the highest cross-validated mean
    fusion_best: bool = False
    # after the experiments, each task's chosen configuration is refit on every labelled patient, calibrated on
    # its out-of-fold predictions and saved to STORE/models/<task>/ (flows/stages/deployed_model.py)
    deploy_models: bool = True
    fusion_mlflow: bool = True  # the run's experiment specs are logged to MLflow (file store STORE/mlruns)
    # every patient's report (flows/patients) under STORE/reports/patients/, linked from the run report
    patient_reports: bool = False
    # target ranking
    ranking_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    compounds_per_target: int = 5
    predicted_links_top: int = 20  # top-ranked targets without a measured potent compound get predicted links
    activity_steps: int = 100  # optimiser steps of the activity model on the library's activities (0: none)

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


# config keys each stage's artifacts depend on (a change of any other key leaves them reusable)
STAGE_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "radiology": ("volume_patch_vox", "volume_patch_spacing_mm", "roi", "roi_fallback", "radiomics",
                  "radiomics_texture"),
    "volume-encoders": ("seed", "volume_embed_dim", "volume_encoder", "volume_encoder_epochs"),
    "pathology": ("seed", "tile_encoder", "tile_size", "target_mpp", "min_tissue", "encoder_tiles_per_slide",
                  "tile_feature_dim", "tile_encoder_epochs"),
    "omics": ("n_hvg", "labels"),
    "spatial": ("seed",),
    "spatial-encoder": ("seed", "spatial_embed_dim", "spatial_encoder_epochs", "spatial_knn",
                        "spatial_panel_genes", "spatial_pseudobulk_genes", "spatial_pseudobulk_pcs",
                        "spatial_graph_features"),
    "fusion": ("seed", "min_patients", "strategies", "single_modalities", "cv_splits", "cv_repeats", "fusion_epochs",
               "fusion_lr", "fusion_weight_decay", "fusion_hidden", "fusion_dropout", "torch_cpu_threads",
               "modality_dropout", "embed_dim", "survival_experiments", "fusion_batch_size", "survival_select",
               "fusion_bag_instances", "fusion_best", "deploy_models"),
    "ranking": ("ranking_weights", "compounds_per_target", "predicted_links_top", "activity_steps", "seed"),
}

# source folders/files (relative to the project root) whose code each stage's artifacts depend on
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "radiology": ("imaging", "flows/stages/radiology.py"),
    "volume-encoders": ("imaging/volume_encoder.py", "imaging/frozen_encoders.py", "imaging/weights/MANIFEST.json",
                        "flows/stages/radiology.py"),
    "pathology": ("imaging", "imaging/weights/MANIFEST.json", "flows/stages/pathology.py"),
    "omics": ("omics", "flows/stages/bulk_omics.py"),
    "spatial": ("omics", "imaging/tiling.py", "flows/stages/spatial.py", "flows/stages/spatial_pseudobulk.py",
                "flows/stages/pathology.py"),
    "spatial-encoder": ("omics", "flows/stages/spatial.py", "flows/stages/spatial_pseudobulk.py"),
    "fusion": ("fusion", "imaging/mil.py", "omics/encoders.py", "flows/stages/fusion_experiments.py",
               "flows/stages/run_specs.py", "flows/experiments/inputs.py", "flows/experiments/store.py",
               "flows/experiments/spec.py", "flows/experiments/runner.py", "flows/experiments/bags.py",
               "flows/stages/deployed_model.py"),
    "ranking": ("omics", "molecules", "flows/results/ranking.py", "flows/results/evidence_weights.yaml", "flows/stages/evidence.py",
                "flows/stages/evidence_rows.py", "flows/stages/activity_links.py", "flows/stages/bulk_omics.py"),
}
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_code_version() -> dict[str, str]:
    """Every stage's ``code_version``: what a run record keeps of the code that made it."""
    return {stage: code_version(stage) for stage in STAGE_CODE}


@lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    """Package version plus a hash of the Python sources a stage depends on (changes when its code does)."""
    try:
        version = metadata.version("fusionrx")
    except metadata.PackageNotFoundError:
        version = "unknown"
    digest = hashlib.sha256()
    for part in STAGE_CODE[stage]:
        p = PROJECT_ROOT / part
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if f.exists():
                digest.update(str(f.relative_to(PROJECT_ROOT)).encode())
                digest.update(f.read_bytes())
    return f"{version}+{digest.hexdigest()[:12]}"


def stage_key_config(stage: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The config subset plus the code version that key a stage's artifacts."""
    return {"config": {k: cfg[k] for k in STAGE_CONFIG_KEYS[stage]}, "code": code_version(stage)}
