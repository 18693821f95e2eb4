"""The FusionRx Prefect flow: ingest -> encode -> fusion experiments -> target ranking -> results DB.

Tasks here only wire, record and report; the science is in the stage functions (flows/stages) and
the modality packages. A bad input file is reported and skipped, never fatal to the cohort.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.catalog import Catalog, load_catalog
from flows.config import RunConfig, load_run_config
from flows.store import ArtifactStore, config_sha256, path_sha256
from fusion.errors import FusionRxError

FUSION_MODALITIES = ("ct", "pet", "wsi", "expression", "spatial")


def _log(msg: str) -> None:
    try:
        get_run_logger().info(msg)
    except Exception:  # outside a flow run (plain function call)
        print(msg, flush=True)


def _skip(source: str, path: Any, exc: Exception) -> dict[str, str]:
    return {"source": source, "file": str(path), "error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------------- radiology
@task(name="ingest-radiology", cache_policy=NO_CACHE)
def ingest_radiology_task(pid: str, ct_dir: str, pet_dir: str | None, store_root: str, cfg: dict,
                          run_id: str) -> dict[str, Any]:
    """CT + PET of one patient -> volumes, phenotypes, patches (reused when inputs are unchanged)."""
    from flows.stages.radiology import ingest_radiology

    store = ArtifactStore(store_root)
    name = f"imaging/radiology/{pid}.json"
    inputs = {"ct": path_sha256(ct_dir), **({"pet": path_sha256(pet_dir)} if pet_dir else {})}
    sub_cfg = {k: cfg[k] for k in ("volume_patch_vox", "volume_patch_spacing_mm")}
    if store.is_fresh(name, inputs, sub_cfg):
        return json.loads(store.path(name).read_text())
    try:
        res = ingest_radiology(pid, Path(ct_dir), Path(pet_dir) if pet_dir else None,
                               store.path("imaging/radiology"), cfg["volume_patch_vox"],
                               cfg["volume_patch_spacing_mm"])
    except FusionRxError as exc:
        return {"patient_id": pid, "error": _skip("ct", ct_dir, exc)}
    out = asdict(res)
    tmp = store.path(name + ".tmp")
    tmp.write_text(json.dumps(out, default=float))
    tmp.replace(store.path(name))
    store.record(name, "ingest-radiology", inputs, sub_cfg, run_id)
    return out


@task(name="encode-radiology", cache_policy=NO_CACHE)
def encode_radiology_task(results: list[dict[str, Any]], cfg: dict) -> dict[str, pd.DataFrame]:
    """Self-supervised 3D SE-CNN autoencoders on CT and SUV patches -> ct / pet feature tables."""
    from flows.stages.radiology import load_patches
    from imaging.volume_encoder import embed_volumes, fit_volume_autoencoder

    ids, ct, suv = load_patches(results)
    phen = pd.DataFrame([r["phenotypes"] for r in results], index=ids)
    ct_enc = fit_volume_autoencoder(ct, embed_dim=cfg["volume_embed_dim"], epochs=cfg["volume_encoder_epochs"],
                                    seed=cfg["seed"])
    ct_emb = pd.DataFrame(embed_volumes(ct_enc, ct), index=ids).add_prefix("ct_ae_")
    ct_cols = ["ct_tumour_volume_ml", "ct_tumour_diameter_mm", "ct_tumour_mean_hu"]
    frames = {"ct": pd.concat([phen[ct_cols], ct_emb], axis=1).dropna()}
    has_pet = np.array([r.get("suv_npz") is not None for r in results])
    pet_cols = ["suv_max", "suv_mean", "suv_peak", "mtv_ml", "tlg"]
    if has_pet.sum() >= 4:
        pet_ids = [i for i, h in zip(ids, has_pet) if h]
        pet_enc = fit_volume_autoencoder(suv[has_pet], embed_dim=cfg["volume_embed_dim"],
                                         epochs=cfg["volume_encoder_epochs"], seed=cfg["seed"] + 1)
        pet_emb = pd.DataFrame(embed_volumes(pet_enc, suv[has_pet]), index=pet_ids).add_prefix("pet_ae_")
        frames["pet"] = pd.concat([phen.loc[pet_ids, pet_cols], pet_emb], axis=1).dropna()
    frames["phenotypes"] = phen
    return frames


# ------------------------------------------------------------------------------------ pathology
@task(name="plan-slide", cache_policy=NO_CACHE)
def plan_slide_task(pid: str, path: str, cfg: dict):
    """Tissue mask, tile grid and stain normaliser of one slide (or a skip record)."""
    from flows.stages.pathology import plan_slide

    try:
        return plan_slide(pid, Path(path), cfg["tile_size"], cfg["target_mpp"], cfg["min_tissue"], cfg["seed"])
    except FusionRxError as exc:
        return {"patient_id": pid, "error": _skip("wsi", path, exc)}


TILE_ENCODER_KEYS = ("seed", "tile_size", "target_mpp", "min_tissue", "encoder_tiles_per_slide",
                     "tile_feature_dim", "tile_encoder_epochs")


@task(name="fit-tile-encoder", cache_policy=NO_CACHE)
def fit_tile_encoder_task(plans: list, cfg: dict, store_root: str, run_id: str):
    """Self-supervised tile CNN on tiles sampled from every slide of the cohort (reused from the store
    while the slides and the encoder settings are unchanged)."""
    from flows.stages.pathology import sample_cohort_tiles
    from imaging.tile_encoder import fit_tile_encoder, load_tile_encoder, save_tile_encoder

    store = ArtifactStore(store_root)
    name = "wsi/tile_encoder.pt"
    inputs = {p.patient_id: path_sha256(p.path) for p in plans}
    sub_cfg = {k: cfg[k] for k in TILE_ENCODER_KEYS}
    if store.is_fresh(name, inputs, sub_cfg):
        _log(f"[wsi] slides unchanged: reusing the tile encoder {store.path(name)}")
        return load_tile_encoder(store.path(name), cfg["tile_feature_dim"])
    tiles = sample_cohort_tiles(plans, cfg["encoder_tiles_per_slide"], cfg["seed"], log=_log)
    _log(f"[wsi] training the tile encoder on {len(tiles)} tiles from {len(plans)} slides")
    encoder = fit_tile_encoder(tiles, feature_dim=cfg["tile_feature_dim"], epochs=cfg["tile_encoder_epochs"],
                               seed=cfg["seed"])
    save_tile_encoder(encoder, store.path(name))
    store.record(name, "fit-tile-encoder", inputs, sub_cfg, run_id)
    return encoder


@task(name="slide-features", cache_policy=NO_CACHE)
def slide_features_task(plan, encoder, store_root: str, cfg: dict, run_id: str) -> dict[str, Any]:
    """Stream one slide's tiles through stain normalisation and the encoder; write HDF5 features
    (skipped when the slide and the encoder are unchanged)."""
    from flows.stages.pathology import extract_features

    store = ArtifactStore(store_root)
    name = f"wsi/{plan.patient_id}.h5"
    inputs = {"slide": path_sha256(plan.path), "encoder": path_sha256(store.path("wsi/tile_encoder.pt"))}
    sub_cfg = {k: cfg[k] for k in TILE_ENCODER_KEYS}
    if not store.is_fresh(name, inputs, sub_cfg):
        try:
            extract_features(plan, encoder, store.path(name))
        except FusionRxError as exc:
            return {"patient_id": plan.patient_id, "error": _skip("wsi", plan.path, exc)}
        store.record(name, "slide-features", inputs, sub_cfg, run_id)
    return {"patient_id": plan.patient_id, "features_h5": str(store.path(name))}


# ---------------------------------------------------------------------------------------- omics
@task(name="ingest-bulk-omics", cache_policy=NO_CACHE)
def bulk_omics_task(catalog: Catalog):
    """GDC expression, MAF, copy number and clinical tables of the cohort."""
    from flows.stages.bulk_omics import read_bulk_omics

    return read_bulk_omics(catalog)


@task(name="ingest-spatial", cache_policy=NO_CACHE)
def spatial_task(pid: str, path: str, features_h5: str | None, store_root: str, cfg: dict) -> dict[str, Any]:
    """One spatial sample: QC/normalise/cluster, spots linked to the histology under them."""
    from flows.stages.spatial import process_spatial_sample

    out = ArtifactStore(store_root).path(f"spatial/{pid}.h5ad")
    try:
        return process_spatial_sample(pid, Path(path), Path(features_h5) if features_h5 else None, out, cfg)
    except FusionRxError as exc:
        return {"patient_id": pid, "error": _skip("spatial", path, exc)}


@task(name="encode-spatial", cache_policy=NO_CACHE)
def encode_spatial_task(samples: list[dict[str, Any]], cfg: dict) -> pd.DataFrame:
    """Deep Graph Infomax GNN over every sample's spot graph -> one embedding per patient."""
    from flows.stages.spatial import common_graphs
    from omics.encoders import embed_spot_graphs, fit_spot_graph_encoder

    graphs = common_graphs(samples, cfg["spatial_panel_genes"], cfg["spatial_knn"])
    enc, _losses = fit_spot_graph_encoder(graphs, embed_dim=cfg["spatial_embed_dim"], epochs=cfg["spatial_encoder_epochs"],
                                 seed=cfg["seed"])
    emb = embed_spot_graphs(enc, graphs)
    return pd.DataFrame(emb, index=[s["patient_id"] for s in samples]).add_prefix("spatial_dgi_")


# --------------------------------------------------------------------------------------- fusion
@task(name="fusion-experiments", cache_policy=NO_CACHE)
def fusion_task(frames: dict[str, pd.DataFrame], bags: dict[str, Any], labels: pd.Series, cfg: dict,
                survival: pd.DataFrame | None = None):
    """CV of every fusion strategy and single modality on the diagnosis and survival; model evidence."""
    from flows.stages.fusion_experiments import run_fusion_experiments

    return run_fusion_experiments(frames, bags, labels, cfg, survival=survival)


# ------------------------------------------------------------------------------------------ flow
@flow(name="fusionrx-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def fusionrx_pipeline(catalog_path: str, store_path: str, config_path: str | None = None) -> dict[str, Any]:
    """Run the whole pipeline over a catalog into a store; returns the run summary."""
    from flows.stages.evidence import assemble_results
    from flows.stages.fusion_experiments import slide_bags

    started = datetime.now(timezone.utc)
    catalog = load_catalog(catalog_path)
    config = load_run_config(config_path)
    cfg = config.to_dict()
    store = ArtifactStore(store_path)
    inputs = {name: path_sha256(src.path) for name, src in catalog.sources.items()}
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{config_sha256([inputs, cfg])[:8]}"
    _log(f"[run {run_id}] cohort {catalog.cohort}: {len(catalog.sources)} sources, store {store.root}")
    skipped: list[dict[str, str]] = []
    timings: dict[str, float] = {}

    # --- radiology
    t0 = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {}
    ct_src, pet_src = catalog.by_modality("ct"), catalog.by_modality("pet")
    if ct_src is not None:
        from flows.stages.radiology import discover_radiology

        cts, pets, rad_skipped = discover_radiology(ct_src, pet_src)  # header index; PET without CT reported
        skipped += rad_skipped
        futures = [ingest_radiology_task.submit(pid, str(d), str(pets[pid]) if pid in pets else None,
                                                str(store.root), cfg, run_id) for pid, d in cts.items()]
        rad = [f.result() for f in futures]
        ok = [r for r in rad if "error" not in r]
        skipped += [r["error"] for r in rad if "error" in r]
        skipped += [{"source": "pet", "file": str(pets.get(r["patient_id"])), "error": r["pet_error"]}
                    for r in ok if r.get("pet_error")]
        _log(f"[radiology] {len(ok)}/{len(cts)} CT series ingested "
             f"({sum(r['suv_npz'] is not None for r in ok)} with PET on the CT grid)")
        if len(ok) >= 4:
            rf = encode_radiology_task.submit(ok, cfg).result()
            frames.update({k: v for k, v in rf.items() if k in ("ct", "pet")})
            pheno = rf["phenotypes"]
            store.write_parquet("imaging/phenotypes.parquet", pheno)
    timings["radiology_s"] = time.perf_counter() - t0

    # --- pathology
    t0 = time.perf_counter()
    features_h5: dict[str, str] = {}
    wsi_src = catalog.by_modality("wsi")
    if wsi_src is not None:
        from flows.stages.pathology import discover_slides

        slides = wsi_src.items() or discover_slides(wsi_src.path, wsi_src.pattern, wsi_src.id_map)
        plans = [f.result() for f in [plan_slide_task.submit(pid, str(p), cfg) for pid, p in slides.items()]]
        skipped += [p["error"] for p in plans if isinstance(p, dict)]
        plans = [p for p in plans if not isinstance(p, dict)]
        if plans:
            encoder = fit_tile_encoder_task.submit(plans, cfg, str(store.root), run_id).result()
            feats = [f.result() for f in [slide_features_task.submit(p, encoder, str(store.root), cfg, run_id)
                                          for p in plans]]
            skipped += [f["error"] for f in feats if "error" in f]
            features_h5 = {f["patient_id"]: f["features_h5"] for f in feats if "error" not in f}
            _log(f"[wsi] {len(features_h5)}/{len(slides)} slides tiled and encoded "
                 f"({sum(len(p.grid) for p in plans)} tissue tiles)")
    timings["pathology_s"] = time.perf_counter() - t0

    # --- bulk omics
    t0 = time.perf_counter()
    from flows.stages.bulk_omics import expression_features, omics_evidence

    bulk = bulk_omics_task.submit(catalog).result()
    skipped += [{"source": "expression", "file": "", "error": e} for e in bulk.errors]
    skipped += bulk.skipped  # bad MAF / copy-number files: named, only that source or file dropped
    frames["expression"] = expression_features(bulk, cfg["n_hvg"])
    store.write_h5ad("omics/tumour_expression.h5ad", bulk.tumour)
    _log(f"[omics] {bulk.expression.n_obs} RNA samples ({int(bulk.expression.obs['is_normal'].sum())} normal), "
         f"{bulk.expression.n_vars} genes, {len(bulk.clinical)} clinical records")
    timings["omics_s"] = time.perf_counter() - t0

    # --- spatial
    t0 = time.perf_counter()
    spatial_samples: list[dict[str, Any]] = []
    sp_src = catalog.by_modality("spatial")
    if sp_src is not None:
        listed = sp_src.items()  # explicit per-patient files (as `fusionrx scan --out` writes them)
        files = list(listed.values()) if listed else sorted(sp_src.path.glob(sp_src.pattern or "*.h5ad"))
        pids = list(listed) if listed else [sp_src.patient_id(f.stem[:12]) for f in files]
        futs = [spatial_task.submit(pid, str(f), features_h5.get(pid), str(store.root), cfg)
                for pid, f in zip(pids, files)]
        res = [f.result() for f in futs]
        skipped += [r["error"] for r in res if "error" in r]
        spatial_samples = [r for r in res if "error" not in r]
        if len(spatial_samples) >= 3:
            frames["spatial"] = encode_spatial_task.submit(spatial_samples, cfg).result()
        _log(f"[spatial] {len(spatial_samples)}/{len(files)} spatial samples processed")
    timings["spatial_s"] = time.perf_counter() - t0

    # --- fusion experiments on the diagnosis
    t0 = time.perf_counter()
    labels = bulk.clinical["primary_diagnosis"].dropna()
    from flows.stages.features import precomputed_features

    feat_frames, feat_bags, feat_skipped = precomputed_features(catalog)  # users' own embeddings
    frames.update(feat_frames)
    skipped += feat_skipped
    bags = feat_bags or slide_bags(features_h5)
    for name, frame in frames.items():  # patient-indexed embeddings per modality
        store.write_parquet(f"embeddings/{name}.parquet", frame)
    survival = bulk.clinical[["os_time_days", "os_event"]].dropna()
    fusion_out = fusion_task.submit(frames, bags, labels, cfg, survival).result()
    store.write_parquet("metrics/experiments.parquet", fusion_out["experiments"])
    timings["fusion_s"] = time.perf_counter() - t0

    # --- evidence, ranking, compounds, results DB
    t0 = time.perf_counter()
    summary = assemble_results(catalog=catalog, store=store, config=config, bulk=bulk,
                               spatial_samples=spatial_samples, fusion_out=fusion_out, run_id=run_id,
                               started=started, inputs=inputs, skipped=skipped, timings=timings,
                               log=_log)
    timings["ranking_s"] = time.perf_counter() - t0
    _log(f"[run {run_id}] done; stage times (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    return summary


def run_pipeline(catalog_path: str | Path, store_path: str | Path, config_path: str | Path | None = None) -> dict:
    """Validate the catalog and config, then run the Prefect flow (a temporary local Prefect server is
    started when none is configured)."""
    load_catalog(catalog_path)  # fail fast, before any server starts
    load_run_config(config_path)
    return fusionrx_pipeline(str(catalog_path), str(store_path), str(config_path) if config_path else None)
