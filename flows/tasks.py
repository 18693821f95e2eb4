"""Prefect tasks of the pipeline: each wraps one stage function of flows/stages with the store's
``reuse_or_build`` and returns a ``TaskResult``: the status and the value, or a ``Skipped`` record.

Tasks take only picklable arguments (paths as str, precomputed input hashes, the config dict) so that
any Prefect task runner (threads, Dask) can run them; input hashing happens once, in the flow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.config import stage_key_config
from flows.skipped import Skipped
from flows.store.artifacts import FAILED, ArtifactStore, load_pickle, save_pickle
from fusion.errors import FusionRxError


@dataclass(frozen=True)
class TaskResult:
    """What a task gives the flow: its status (new / changed / reused / failed) and value, or the skip record."""

    status: str
    value: Any = None
    skipped: Skipped | None = None


def failure(source: str, path: Any, exc: Exception) -> TaskResult:
    """A task result for a bad input: reported and skipped, never fatal to the cohort."""
    return TaskResult(FAILED, skipped=Skipped.of(source, path, exc))


def _relative(d: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A result whose paths into ``folder`` are made relative to it (the store can move)."""
    return {k: (str(Path(v).relative_to(folder)) if isinstance(v, str) and v.startswith(f"{folder}/") else v)
            for k, v in d.items()}


def _absolute(d: dict[str, Any], folder: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The inverse of ``_relative`` for the path-valued ``keys``."""
    return {k: (str(folder / v) if k in keys and v else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------- radiology
RADIOLOGY_PATHS = ("ct_npz", "suv_npz", "patch_npz")


def radiology_result(folder: Path) -> dict[str, Any]:
    """A stored radiology artifact's result (``imaging/radiology/<pid>``), its file paths absolute."""
    return _absolute(json.loads((folder / "result.json").read_text()), folder, RADIOLOGY_PATHS)


@task(name="ingest-radiology", cache_policy=NO_CACHE)
def ingest_radiology_task(pid: str, ct_dir: str, pet_dir: str | None, seg_files: list[str], inputs: dict[str, str],
                          store_root: str, cfg: dict, run_id: str) -> dict[str, Any]:
    """CT + PET of one patient -> volumes, phenotypes, patches in ``imaging/radiology/<pid>/``."""
    store = ArtifactStore(store_root)
    name = f"imaging/radiology/{pid}"

    def build(tmp: Path) -> dict[str, Any]:
        from flows.stages.radiology import ingest_radiology

        from imaging.roi import RoiSpec

        spec = RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto"))
        res = ingest_radiology(pid, Path(ct_dir), Path(pet_dir) if pet_dir else None, tmp,
                               cfg["volume_patch_vox"], cfg["volume_patch_spacing_mm"],
                               [Path(f) for f in seg_files], spec, bool(cfg.get("radiomics", False)),
                               bool(cfg.get("radiomics_texture", False)))
        (tmp / "result.json").write_text(json.dumps(_relative(asdict(res), tmp), default=float))
        return _absolute(json.loads((tmp / "result.json").read_text()), store.root / name, RADIOLOGY_PATHS)

    try:
        value, status = store.reuse_or_build(name, "ingest-radiology", inputs, stage_key_config("radiology", cfg),
                                             run_id, build, radiology_result, folder=True)
    except FusionRxError as exc:
        return failure("ct", ct_dir, exc)
    return TaskResult(status, value)


@task(name="encode-radiology", cache_policy=NO_CACHE)
def encode_radiology_task(results: list[dict[str, Any]], inputs: dict[str, str], store_root: str, cfg: dict,
                          run_id: str) -> dict[str, Any]:
    """Self-supervised 3D SE-CNN autoencoders on CT and SUV patches -> ct / pet / phenotype tables
    (refitted only when a patient's radiology artifact changed)."""
    store = ArtifactStore(store_root)

    def build(tmp: Path) -> dict[str, Any]:
        from flows.stages.radiology import encode_volumes

        frames = encode_volumes(results, cfg)
        store.write_parquet("imaging/phenotypes.parquet", frames["phenotypes"])
        save_pickle(frames, tmp)
        return frames

    value, status = store.reuse_or_build("imaging/volume_encoders.pkl", "encode-radiology", inputs,
                                         stage_key_config("volume-encoders", cfg), run_id, build, load_pickle)
    return TaskResult(status, value)


# ------------------------------------------------------------------------------------ pathology
@task(name="plan-slide", cache_policy=NO_CACHE)
def plan_slide_task(pid: str, path: str, inputs: dict[str, str], store_root: str, cfg: dict,
                    run_id: str) -> dict[str, Any]:
    """Tissue mask, tile grid and stain normaliser of one slide, kept in the store (or a failure)."""
    store = ArtifactStore(store_root)

    def build(tmp: Path):
        from flows.stages.pathology import plan_slide

        # verify_slides: every tile of every level decoded first, in the slide's worker process (a damaged tile
        # skips the slide, named; a decoder that dies in native code fails only this slide)
        plan = plan_slide(pid, Path(path), cfg["tile_size"], cfg["target_mpp"], cfg["min_tissue"], cfg["seed"],
                          verify=bool(cfg.get("verify_slides")))
        save_pickle(plan, tmp)
        return plan

    try:
        value, status = store.reuse_or_build(f"wsi/plans/{pid}.pkl", "plan-slide", inputs,
                                             stage_key_config("pathology", cfg), run_id, build, load_pickle)
    except FusionRxError as exc:
        return failure("wsi", path, exc)
    return TaskResult(status, value)


TILE_ENCODER = "wsi/tile_encoder.pt"


@task(name="fit-tile-encoder", cache_policy=NO_CACHE)
def fit_tile_encoder_task(plans: list, inputs: dict[str, str], store_root: str, cfg: dict,
                          run_id: str) -> dict[str, Any]:
    """Self-supervised tile CNN on tiles sampled from every slide (refitted only when a slide changed)."""
    from imaging.tile_encoder import load_tile_encoder

    def build(tmp: Path):
        from flows.stages.pathology import sample_cohort_tiles
        from imaging.tile_encoder import fit_tile_encoder, save_tile_encoder

        # a slide whose training tiles cannot be read is left out here; its feature extraction names it
        tiles = sample_cohort_tiles(plans, cfg["encoder_tiles_per_slide"], cfg["seed"], log=lambda msg: None)
        encoder = fit_tile_encoder(tiles, feature_dim=cfg["tile_feature_dim"], epochs=cfg["tile_encoder_epochs"],
                                   seed=cfg["seed"])
        save_tile_encoder(encoder, tmp)
        return encoder

    store = ArtifactStore(store_root)
    encoder, status = store.reuse_or_build(
        TILE_ENCODER, "fit-tile-encoder", inputs, stage_key_config("pathology", cfg), run_id, build,
        lambda p: load_tile_encoder(p, cfg["tile_feature_dim"]))
    from imaging.pretrained_encoder import TileEmbedder, weights_sha256

    # the fitted encoder as a named embedder: its weights' SHA-256 goes into every feature file it writes
    return TaskResult(status, TileEmbedder.from_builtin(encoder, weights_sha256(store.path(TILE_ENCODER))))


@task(name="slide-features", cache_policy=NO_CACHE)
def slide_features_task(plan, encoder, inputs: dict[str, str], store_root: str, cfg: dict,
                        run_id: str) -> dict[str, Any]:
    """Stream one slide's tiles through stain normalisation and the encoder into ``wsi/<pid>.h5``."""
    store = ArtifactStore(store_root)
    name = f"wsi/{plan.patient_id}.h5"

    def build(tmp: Path) -> Path:
        from flows.stages.pathology import extract_features

        return extract_features(plan, encoder, tmp)

    try:
        _, status = store.reuse_or_build(name, "slide-features", inputs, stage_key_config("pathology", cfg),
                                         run_id, build, lambda p: p)
    except FusionRxError as exc:
        return failure("wsi", plan.path, exc)
    return TaskResult(status, {"patient_id": plan.patient_id, "features_h5": str(store.root / name)})


# ---------------------------------------------------------------------------------------- omics
@task(name="ingest-bulk-omics", cache_policy=NO_CACHE)
def bulk_omics_task(catalog, inputs: dict[str, str], store_root: str, cfg: dict, run_id: str) -> dict[str, Any]:
    """GDC expression, MAF, copy number and clinical tables of the cohort (re-read only when one changed)."""
    store = ArtifactStore(store_root)

    def build(tmp: Path):
        from flows.stages.bulk_omics import read_bulk_omics

        bulk = read_bulk_omics(catalog, cfg.get("labels"))
        if bulk.tumour is not None:
            store.write_h5ad("omics/tumour_expression.h5ad", bulk.tumour)
        save_pickle(bulk, tmp)
        return bulk

    value, status = store.reuse_or_build("omics/bulk_omics.pkl", "ingest-bulk-omics", inputs,
                                         stage_key_config("omics", cfg), run_id, build, load_pickle)
    return TaskResult(status, value)


def spatial_result(folder: Path) -> dict[str, Any]:
    """A stored spatial sample's result (``spatial/<pid>``), its h5ad path absolute."""
    return _absolute(load_pickle(folder / "result.pkl"), folder, ("h5ad",))


@task(name="ingest-spatial", cache_policy=NO_CACHE)
def spatial_task(pid: str, path: str, features_h5: str | None, inputs: dict[str, str], store_root: str,
                 cfg: dict, run_id: str) -> dict[str, Any]:
    """One spatial sample: QC/normalise/cluster, spots linked to the histology under them."""
    store = ArtifactStore(store_root)
    name = f"spatial/{pid}"

    def build(tmp: Path) -> dict[str, Any]:
        from flows.stages.spatial import process_spatial_sample

        res = process_spatial_sample(pid, Path(path), Path(features_h5) if features_h5 else None,
                                     tmp / "sample.h5ad", cfg)
        save_pickle(_relative(res, tmp), tmp / "result.pkl")
        return _absolute(_relative(res, tmp), store.root / name, ("h5ad",))

    try:
        value, status = store.reuse_or_build(name, "ingest-spatial", inputs, stage_key_config("spatial", cfg),
                                             run_id, build, spatial_result, folder=True)
    except FusionRxError as exc:
        return failure("spatial", path, exc)
    return TaskResult(status, value)


@task(name="encode-spatial", cache_policy=NO_CACHE)
def encode_spatial_task(samples: list[dict[str, Any]], inputs: dict[str, str], store_root: str, cfg: dict,
                        run_id: str) -> dict[str, Any]:
    """Every spatial sample -> one feature vector per patient (tumour-region pseudo-bulk PCs, DGI optional)."""
    def build(tmp: Path):
        from flows.stages.spatial import encode_spatial_samples

        emb = encode_spatial_samples(samples, cfg)
        emb.to_parquet(tmp)
        return emb

    import pandas as pd

    value, status = ArtifactStore(store_root).reuse_or_build(
        "spatial/embedding.parquet", "encode-spatial", inputs, stage_key_config("spatial-encoder", cfg), run_id,
        build, pd.read_parquet)
    return TaskResult(status, value)


# --------------------------------------------------------------------------------------- fusion
@task(name="fusion-experiments", cache_policy=NO_CACHE)
def fusion_task(frames: dict, bags: dict, labels, survival, inputs: dict[str, str], store_root: str, cfg: dict,
                run_id: str) -> dict[str, Any]:
    """The run's experiment specs over its store (diagnosis, survival: every strategy and single modality on
    the same folds, through the experiment engine) plus the model evidence (rerun only when an input
    embedding, the labels or the fusion settings changed)."""
    store = ArtifactStore(store_root)

    def build(tmp: Path):
        from flows.stages.fusion_experiments import model_evidence
        from flows.stages.run_specs import run_store_experiments
        from fusion.train import seeded

        for modality, frame in frames.items():  # patient-indexed embeddings per modality
            store.write_parquet(f"embeddings/{modality}.parquet", frame)
        out = run_store_experiments(store.root, cfg, sorted(frames), ["wsi"] if bags else [],
                                    with_survival=survival is not None and cfg["survival_experiments"],
                                    workers=cfg["fusion_workers"], mlflow=cfg["fusion_mlflow"],
                                    with_diagnosis=len(labels) > 0)
        out["model_evidence"] = None
        if len(labels):
            with seeded(cfg["seed"]):  # the evidence model's initial weights come from the global generator
                out["model_evidence"] = model_evidence(frames, bags, labels, cfg)
        store.write_parquet("metrics/experiments.parquet", out["experiments"])
        save_pickle(out, tmp)
        return out

    value, status = store.reuse_or_build("fusion/experiments.pkl", "fusion-experiments", inputs,
                                         stage_key_config("fusion", cfg), run_id, build, load_pickle)
    return TaskResult(status, value)
