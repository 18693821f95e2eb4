"""The FusionRx Prefect flow: radiology -> pathology -> bulk omics -> spatial -> fusion -> ranking.

One function per stage; each submits its Prefect tasks (flows/tasks.py), which wrap the stage
functions of flows/stages with the store's reuse-or-build, so a rerun only does the work whose inputs,
config or code changed. A bad input file is reported and skipped, never fatal to the cohort.
"""

from __future__ import annotations

import contextlib
import json

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import tasks as T
from flows.catalog.schema import Catalog, load_catalog
from flows.config import RunConfig, load_run_config, stage_key_config
from flows.console import RunConsole
from flows.skipped import Skipped
from flows.store.input_hashes import InputHasher, config_sha256
from flows.store.atomic import atomic_path
from flows.store.run_lock import run_lock
from fusion.errors import FusionDataError
from flows.store.artifacts import FAILED, REUSED, ArtifactStore, load_pickle, save_pickle

FUSION_MODALITIES = ("ct", "pet", "wsi", "expression", "spatial")
TASK_RUNNERS = ("local", "dask")
PHENOTYPES = "imaging/phenotypes.parquet"


@dataclass
class RunContext:
    """Everything the stages of one run share: catalog, config, store, input hasher, console, skips."""

    catalog: Catalog
    config: RunConfig
    store: ArtifactStore
    hasher: InputHasher
    console: RunConsole
    run_id: str
    started: datetime
    inputs: dict[str, str]
    skipped: list[Skipped] = field(default_factory=list)
    stages_skipped: list[str] = field(default_factory=list)  # one line per stage whose input is absent
    radiology_counts: dict[str, int] = field(default_factory=dict)  # patients measured on an ROI / auto / none

    def skip_stage(self, line: str) -> None:
        """A stage whose input is absent: one line that says why (printed and kept in the run record)."""
        self.stages_skipped.append(line)
        self.console.log(line)

    @property
    def cfg(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def root(self) -> str:
        return str(self.store.root)


class Current:
    """A per-patient result loaded by the flow itself, in a task's future's place: the patient's artifact is
    current (inputs, config and code unchanged), so no task run is submitted just to find that out (a rerun
    of 60 patients otherwise pays 60 task runs' bookkeeping)."""

    def __init__(self, value: Any):
        self._result = T.TaskResult(REUSED, value)

    def result(self) -> T.TaskResult:
        return self._result


def current_or_submit(ctx: RunContext, name: str, stage: str, inputs: dict[str, str], load, task, *args):
    """``Current(load(artifact))`` when the store's ``name`` is current for these inputs and the stage's
    config and code, else ``task.submit(*args)`` (also when the stored result cannot be read: the task
    then reports it)."""
    if ctx.store.is_fresh(name, inputs, stage_key_config(stage, ctx.cfg)):
        try:
            return Current(load(ctx.store.root / name))
        except (OSError, ValueError, EOFError):
            pass
    return task.submit(*args)


def gather(futures: list, bar) -> list[T.TaskResult]:
    """Task results in submission order; the stage bar advances as each task finishes."""
    pending = [f for f in futures if not isinstance(f, Current)]
    bar.advance(REUSED, len(futures) - len(pending))
    for fut in as_completed(pending):
        bar.advance(fut.result().status)
    return [f.result() for f in futures]


def split_results(ctx: RunContext, results: list[T.TaskResult]) -> list[Any]:
    """Values of the tasks that succeeded; failures go to the run's skip list."""
    ctx.skipped += [r.skipped for r in results if r.status == FAILED]
    return [r.value for r in results if r.status != FAILED]


def open_run(catalog_path: str, store_path: str, config_path: str | None, console: RunConsole) -> RunContext:
    """Load the catalog and config, hash every input once (size+mtime cache) and name the run."""
    from flows.pacs.source import pull_remote_sources

    started = datetime.now(timezone.utc)
    catalog = load_catalog(catalog_path)
    config = load_run_config(config_path)
    store = ArtifactStore(store_path)
    # PACS sources: pulled into STORE/raw/<source> (each instance once), then read as DICOM folders
    catalog, pull_skipped = pull_remote_sources(catalog, store.root)
    hasher = InputHasher(store.root)
    inputs = {name: hasher(src.path) for name, src in catalog.sources.items()}
    hasher.save()
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{config_sha256([inputs, config.to_dict()])[:8]}"
    console.log(f"[run {run_id}] cohort {catalog.cohort}: {len(catalog.sources)} sources, store {store.root} "
                f"({hasher.files_read} input files read for hashing)")
    scanned = [Skipped("scan", path, error) for path, error in catalog.scan_problems]  # damaged files `scan` named
    return RunContext(catalog, config, store, hasher, console, run_id, started, inputs,
                      list(pull_skipped) + scanned)


# ---------------------------------------------------------------------------------------- stages
def radiology_stage(ctx: RunContext) -> dict[str, pd.DataFrame]:
    """CT/PET series per patient -> phenotypes and patches; cohort volume autoencoders -> ct/pet tables."""
    ct_src, pet_src = ctx.catalog.by_modality("ct"), ctx.catalog.by_modality("pet")
    if ct_src is None:
        if pet_src is not None:
            ctx.skipped.append(Skipped("pet", str(pet_src.path),
                                       "DicomSeriesError: PET source without a CT source (radiology needs a CT)"))
        ctx.skip_stage("radiology: no CT source, skipped")
        return {}
    cts, pets, rad_skipped, segs = discovered_radiology(ctx, ct_src, pet_src)
    ctx.skipped += rad_skipped
    with ctx.console.stage("radiology", len(cts)) as bar:
        futures = []
        for pid, d in cts.items():
            pet = pets.get(pid)
            seg_files = [str(f) for f in segs.get(pid, [])]
            inputs = {"ct": ctx.hasher(d), **({"pet": ctx.hasher(pet)} if pet else {})}
            if seg_files:  # by content, not by path: a moved cohort folder reuses its artifacts
                inputs["segmentations"] = config_sha256(sorted(ctx.hasher(Path(f)) for f in seg_files))
            futures.append(current_or_submit(ctx, f"imaging/radiology/{pid}", "radiology", inputs,
                                             T.radiology_result, T.ingest_radiology_task, pid, str(d),
                                             str(pet) if pet else None, seg_files, inputs, ctx.root, ctx.cfg,
                                             ctx.run_id))
        ok = split_results(ctx, gather(futures, bar))
        ctx.skipped += [Skipped("pet", str(pets.get(r["patient_id"])), r["pet_error"]) for r in ok if r.get("pet_error")]
        write_phenotypes(ctx, ok)
        if len(ok) < 4:
            ctx.skip_stage(f"volume-encoders: {len(ok)} patient(s) with CT; the cohort's volume encoders need >= 4, "
                           "skipped (phenotypes are kept)")
            return {}
        inputs = {r["patient_id"]: ctx.store.key(f"imaging/radiology/{r['patient_id']}") for r in ok}
        t0 = time.perf_counter()
        enc = T.encode_radiology_task.submit(ok, inputs, ctx.root, ctx.cfg, ctx.run_id).result()
    ctx.console.count("volume-encoders", enc.status, seconds=time.perf_counter() - t0)
    return {k: v for k, v in enc.value.items() if k in ("ct", "pet")}


DISCOVERY = "imaging/discovery.pkl"


def discovered_radiology(ctx: RunContext, ct_src, pet_src):
    """The CT / PET series and segmentations per patient (``discover_radiology``: a header index of every
    DICOM file), kept in the store and reused while the source folders are unchanged (their size+mtime hashes):
    a rerun reads no header."""
    from flows.config import code_version
    from flows.stages.radiology import discover_radiology

    inputs = {"ct": ctx.hasher(ct_src.path), "pet": ctx.hasher(pet_src.path) if pet_src is not None else ""}
    key = {"formats": [ct_src.format, pet_src.format if pet_src is not None else None],
           "id_map": ct_src.id_map, "code": code_version("radiology")}
    if ctx.store.is_fresh(DISCOVERY, inputs, key):
        return load_pickle(ctx.store.path(DISCOVERY))
    found = discover_radiology(ct_src, pet_src)  # header index; PET without CT reported
    with atomic_path(ctx.store.path(DISCOVERY)) as tmp:
        save_pickle(found, tmp)
    ctx.store.record(DISCOVERY, "radiology", inputs, key, ctx.run_id)
    return found


def write_phenotypes(ctx: RunContext, results: list[dict[str, Any]]) -> None:
    """The cohort's ROI phenotypes (``imaging/phenotypes.parquet``, one row per patient, read by
    ``fusionrx phenotypes``) and lesion rows (``imaging/lesions.parquet``), rewritten only when a patient's
    radiology changed; counts the patients measured on a segmentation ROI, the automatic lesion, or nothing."""
    rows = [r["roi_row"] for r in results if r.get("roi_row")]
    if not rows:
        return
    table = pd.DataFrame(rows).set_index("patient_id").sort_index()
    inputs = {pid: ctx.store.key(f"imaging/radiology/{pid}") for pid in table.index}
    key = stage_key_config("radiology", ctx.cfg)
    if not ctx.store.is_fresh(PHENOTYPES, inputs, key):
        ctx.store.write_parquet("imaging/lesions.parquet", pd.DataFrame([row for r in results
                                                                         for row in r.get("lesions", [])]))
        ctx.store.write_parquet(PHENOTYPES, table)
        ctx.store.record(PHENOTYPES, "phenotypes", inputs, key, ctx.run_id)
    ctx.skipped += [Skipped(**p) for r in results for p in r.get("problems", [])]  # from the stored result.json
    n_auto = int((table["roi_source"] == "auto").sum())
    n_none = int(table["roi_source"].isna().sum())
    ctx.console.log(f"[radiology] {len(table)} patient(s) measured: {len(table) - n_auto - n_none} on a "
                    f"segmentation ROI, {n_auto} on the automatic lesion, {n_none} not measured (roi_fallback none)")
    ctx.radiology_counts = {"roi": len(table) - n_auto - n_none, "auto": n_auto, "none": n_none}


def pathology_stage(ctx: RunContext) -> dict[str, str]:
    """Slides -> tile plans -> tile encoder -> per-slide feature HDF5 (patient -> path).

    The encoder is the run config's ``tile_encoder``: ``builtin`` (the shipped tile CNN, frozen),
    ``cohort`` (the same CNN fitted once on the cohort's tiles, then kept: a new slide is encoded with the
    existing encoder) or a pretrained timm / callable model whose weights come only from the given file.
    Feature files are keyed by the encoder (name and weights SHA-256), so a store never mixes two encoders'
    features: a new encoder re-encodes every slide.
    Slides whose features are current are neither planned nor read.
    """
    from flows.stages.pathology import discover_slides
    from fusion.errors import TileEncoderError
    from imaging.tile_encoder_spec import TileEncoderSpec  # torch-free: a current store never loads torch here

    src = ctx.catalog.by_modality("wsi")
    if src is None:
        ctx.skip_stage("pathology: no slide source, skipped")
        return {}
    slides = src.items() or discover_slides(src.path, src.pattern, src.id_map)
    spec = TileEncoderSpec.from_config(ctx.config.tile_encoder)
    # a fixed encoder (shipped builtin, timm, callable) only encodes; 'cohort' trains the builtin CNN on the run
    cfg, pretrained = ctx.cfg, spec.kind != "builtin" or spec.weights is not None
    if pretrained:
        if spec.weights is not None and not spec.weights.exists():
            raise TileEncoderError(f"tile_encoder.weights: {spec.weights} does not exist (weights are read only "
                                   "from a local file)")
        if spec.kind != "builtin":  # the builtin CNN takes the run's tile size and resolution
            cfg = {**cfg, "tile_size": spec.tile_px, "target_mpp": spec.mpp or cfg["target_mpp"]}
    key_cfg = stage_key_config("pathology", cfg)
    with ctx.console.stage("pathology", len(slides)) as bar:
        feat_inputs = {pid: {"slide": ctx.hasher(p)} for pid, p in slides.items()}
        have_encoder = pretrained or ctx.store.is_fresh(T.TILE_ENCODER, {}, key_cfg)
        # a pretrained encoder is keyed by its name and weights' hash (size+mtime cached): a rerun whose slides
        # are current neither reads nor loads the weights
        enc_key = (f"{spec.name}:{ctx.hasher(spec.weights) if spec.weights else ''}" if pretrained
                   else ctx.store.key(T.TILE_ENCODER) if have_encoder else "")
        current = {pid for pid in slides if have_encoder
                   and ctx.store.is_fresh(f"wsi/{pid}.h5", {**feat_inputs[pid], "encoder": enc_key}, key_cfg)}
        bar.advance(REUSED, len(current))
        plans = [T.plan_slide_task.submit(pid, str(p), feat_inputs[pid], ctx.root, cfg, ctx.run_id)
                 for pid, p in slides.items() if pid not in current or not have_encoder]
        plans = [f.result() for f in plans]
        bar.advance(FAILED, sum(r.status == FAILED for r in plans))
        plans = split_results(ctx, plans)
        feats = [{"patient_id": pid, "features_h5": str(ctx.store.root / f"wsi/{pid}.h5")} for pid in current]
        if plans:
            if pretrained:
                from imaging.pretrained_encoder import load_encoder

                embedder = load_encoder(spec)  # mismatched weights stop the run, the file named
            else:
                t0 = time.perf_counter()
                enc = T.fit_tile_encoder_task.submit(plans, {}, ctx.root, cfg, ctx.run_id).result()
                ctx.console.count("tile-encoder", enc.status, seconds=time.perf_counter() - t0)
                enc_key, embedder = ctx.store.key(T.TILE_ENCODER), enc.value
            futures = [T.slide_features_task.submit(p, embedder, {**feat_inputs[p.patient_id], "encoder": enc_key},
                                                    ctx.root, cfg, ctx.run_id) for p in plans]
            feats += split_results(ctx, gather(futures, bar))
        elif have_encoder and not pretrained:
            ctx.console.count("tile-encoder", REUSED)
    return {f["patient_id"]: f["features_h5"] for f in sorted(feats, key=lambda f: f["patient_id"])}


def submit_omics(ctx: RunContext):
    """Submit the bulk omics read (GDC expression / MAF / copy number / clinical) without waiting: it
    runs beside the imaging stages; ``omics_stage`` collects it."""
    names = ("expression", "mutations", "copy_number", "clinical")
    srcs = {m: ctx.catalog.by_modality(m) for m in names}
    if all(s is None for s in srcs.values()):
        return None
    inputs = {m: ctx.hasher(s.path) for m, s in srcs.items() if s is not None}
    if srcs["expression"] is not None and srcs["expression"].sample_sheet is not None:
        inputs["sample_sheet"] = ctx.hasher(srcs["expression"].sample_sheet)
    return T.bulk_omics_task.submit(ctx.catalog, inputs, ctx.root, ctx.cfg, ctx.run_id)


def omics_stage(ctx: RunContext, future):
    """The cohort's BulkOmics (re-read only when one of its files changed); empty without omics sources."""
    from flows.stages.bulk_omics import BulkOmics, empty_clinical

    if future is None:
        ctx.skip_stage("omics: no expression, mutation, copy-number or clinical source, skipped")
        return BulkOmics(expression=None, tumour=None, clinical=empty_clinical(), copy_number=None, maf=None)
    with ctx.console.stage("omics", 1) as bar:
        res = future.result()
        bar.advance(res.status)
    bulk = res.value
    ctx.skipped += [Skipped("expression", "", e) for e in bulk.errors]
    ctx.skipped += bulk.skipped  # bad MAF / copy-number files: named, only that source or file dropped
    if res.status != REUSED or not ctx.store.path("clinical/clinical.parquet").exists():
        ctx.store.write_parquet("clinical/clinical.parquet", bulk.clinical)  # labels for `store:` experiment specs
    rna = f"{bulk.expression.n_obs} RNA samples, {bulk.expression.n_vars} genes" if bulk.expression is not None \
        else "no expression"
    ctx.console.detail(f"[omics] {rna}, {len(bulk.clinical)} clinical records")
    return bulk


def spatial_stage(ctx: RunContext, features_h5: dict[str, str]) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
    """Spatial samples (linked to their slide's tiles) -> per-sample results; tumour-region pseudo-bulk PCs
    (+ the DGI graph embedding when spatial_graph_features) -> patient features."""
    src = ctx.catalog.by_modality("spatial")
    if src is None:
        ctx.skip_stage("spatial: no spatial source, skipped")
        return [], None
    listed = src.items()  # explicit per-patient items (h5ad files or Space Ranger folders), as `scan` writes them
    files = list(listed.values()) if listed else sorted(src.path.glob(src.pattern or "*.h5ad"))
    pids = list(listed) if listed else [src.patient_id(f.stem[:12]) for f in files]
    with ctx.console.stage("spatial", len(files)) as bar:
        futures = []
        for pid, f in zip(pids, files):
            feat = features_h5.get(pid)
            inputs = {"sample": ctx.hasher(f), "slide_features": ctx.store.key(f"wsi/{pid}.h5") if feat else ""}
            futures.append(current_or_submit(ctx, f"spatial/{pid}", "spatial", inputs, T.spatial_result,
                                             T.spatial_task, pid, str(f), feat, inputs, ctx.root, ctx.cfg,
                                             ctx.run_id))
        samples = split_results(ctx, gather(futures, bar))
        from flows.stages.spatial_pseudobulk import MIN_COHORT_SAMPLES as MIN_SPATIAL_SAMPLES

        if len(samples) < MIN_SPATIAL_SAMPLES:
            ctx.skip_stage(f"spatial-encoder: {len(samples)} spatial sample(s); the cohort-level spatial features "
                           f"need >= {MIN_SPATIAL_SAMPLES}, skipped (each sample is stored and used as evidence)")
            return samples, None
        inputs = {s["patient_id"]: ctx.store.key(f"spatial/{s['patient_id']}") for s in samples}
        t0 = time.perf_counter()
        enc = T.encode_spatial_task.submit(samples, inputs, ctx.root, ctx.cfg, ctx.run_id).result()
    ctx.console.count("spatial-encoder", enc.status, seconds=time.perf_counter() - t0)
    return samples, enc.value


def fusion_stage(ctx: RunContext, frames: dict[str, pd.DataFrame], features_h5: dict[str, str], bulk) -> dict:
    """Every fusion strategy and single modality, cross-validated (rerun only when an input changed); skipped
    with one line when the cohort has no labels or fewer than ``min_patients`` labelled patients."""
    from flows.stages.bulk_omics import expression_features
    from flows.stages.features import precomputed_features
    from flows.stages.run_specs import no_experiments

    feat_frames, feat_bags, feat_skipped = precomputed_features(ctx.catalog)  # users' own embeddings
    ctx.skipped += feat_skipped
    frames = {**frames, **feat_frames}
    if bulk.tumour is not None:
        frames["expression"] = expression_features(bulk, ctx.config.n_hvg)
    labels = bulk.clinical["primary_diagnosis"].dropna()
    survival = bulk.clinical[["os_time_days", "os_event"]].dropna()
    with_bags = bool(feat_bags or features_h5)
    have = set().union(*[set(f.index) for f in frames.values()], set(feat_bags), set(features_h5))
    n_diag, n_surv = len(labels.index.intersection(list(have))), len(survival.index.intersection(list(have)))
    need = ctx.config.min_patients
    if not frames and not with_bags:
        ctx.skip_stage("experiments: no patient features (no imaging, slide, spatial, expression or feature "
                       "source), skipped")
        return no_experiments()
    if max(n_diag, n_surv) < need or (n_diag < need and labels.nunique() < 2):
        ctx.skip_stage(f"experiments: {n_diag} patient(s) with a diagnosis and {n_surv} with survival among the "
                       f"patients with features; min_patients is {need}, skipped")
        return no_experiments()
    if n_diag < need or labels.nunique() < 2:
        ctx.skip_stage(f"experiments: diagnosis skipped ({n_diag} labelled patient(s), "
                       f"{labels.nunique()} class(es); min_patients {need})")
        labels = labels.iloc[:0]
    if n_surv < need:
        ctx.skip_stage(f"experiments: survival skipped ({n_surv} patient(s) with time and event; "
                       f"min_patients {need})")
        survival = None
    patients = (labels if len(labels) else survival).index
    frames = cv_ready(ctx, frames, patients)
    features_h5 = cv_ready(ctx, {"wsi": features_h5}, patients).get("wsi", {}) if features_h5 else features_h5
    inputs = {"omics": ctx.store.key("omics/bulk_omics.pkl"),
              **{f"wsi:{pid}": ctx.store.key(f"wsi/{pid}.h5") for pid in sorted(features_h5)},
              **{k: config_sha256([list(map(str, v.columns)), pd.util.hash_pandas_object(v).tolist()])
                 for k, v in frames.items()}}
    with ctx.console.stage("fusion", 1) as bar:
        bags = {}
        if not ctx.store.is_fresh("fusion/experiments.pkl", inputs, _fusion_key(ctx)):
            from flows.stages.fusion_experiments import slide_bags  # torch: only when the experiments rerun

            bags = feat_bags or slide_bags(features_h5)
        try:
            res = T.fusion_task.submit(frames, bags, labels, survival, inputs, ctx.root, ctx.cfg,
                                       ctx.run_id).result()
        except FusionDataError as exc:  # e.g. a fold with too few patients having a modality: the run goes on
            bar.advance(FAILED)
            ctx.skip_stage(f"experiments: skipped, the cohort's data do not allow them: {exc}")
            from flows.stages.run_specs import no_experiments

            return no_experiments()
        bar.advance(res.status)
    from flows.stages.deployed_model import deployed_lines

    for line in deployed_lines(res.value.get("models") or {}):
        ctx.console.log(line)
    return res.value


def cv_ready(ctx: RunContext, frames: dict[str, pd.DataFrame], patients: pd.Index) -> dict[str, pd.DataFrame]:
    """The modalities present in at least 2 more labelled patients than a CV test fold holds (so that every
    fold trains on 2 or more); the others are left out of the fusion experiments and reported. A modality is a
    patient-indexed frame or a {patient: slide feature file} mapping."""
    fold = -(-len(patients) // ctx.config.cv_splits)

    def n_labelled(v) -> int:
        return int(pd.Index(list(v.index if isinstance(v, pd.DataFrame) else v)).isin(patients).sum())

    keep = {k: v for k, v in frames.items() if n_labelled(v) >= fold + 2}
    for k in sorted(set(frames) - set(keep)):
        ctx.console.log(f"[fusion] '{k}' left out: {n_labelled(frames[k])} labelled patients, a CV test fold "
                        f"holds up to {fold} and training needs 2")
    return keep


def _fusion_key(ctx: RunContext) -> dict[str, Any]:
    return stage_key_config("fusion", ctx.cfg)


def results_stage(ctx: RunContext, bulk, samples: list[dict[str, Any]], fusion_out: dict) -> dict[str, Any]:
    """Evidence -> ranked targets -> compounds (recomputed only when an input changed), then the run's
    rows in the results DB, its run record and HTML run report."""
    from flows.stages.evidence import rank_and_link

    comp = ctx.catalog.by_modality("compounds")
    if bulk.expression is None:
        from flows.stages.evidence import empty_ranking

        ctx.skip_stage("targets: no expression source, ranking skipped")
        return finish_run(ctx, empty_ranking(ctx.catalog, ctx.config), fusion_out)
    inputs = {"omics": ctx.store.key("omics/bulk_omics.pkl"), "fusion": ctx.store.key("fusion/experiments.pkl"),
              "compounds": ctx.hasher(comp.path) if comp else "",
              **{f"spatial:{s['patient_id']}": ctx.store.key(f"spatial/{s['patient_id']}") for s in samples}}

    def build(tmp: Path) -> dict[str, Any]:
        ranking = rank_and_link(catalog=ctx.catalog, config=ctx.config, bulk=bulk, spatial_samples=samples,
                                fusion_out=fusion_out)
        save_pickle(ranking, tmp)
        return ranking

    with ctx.console.stage("ranking", 1) as bar:
        ranking, status = ctx.store.reuse_or_build("targets/ranking.pkl", "rank-targets", inputs,
                                                   stage_key_config("ranking", ctx.cfg), ctx.run_id, build,
                                                   load_pickle)
        bar.advance(status)
    return finish_run(ctx, ranking, fusion_out)


def finish_run(ctx: RunContext, ranking: dict[str, Any], fusion_out: dict) -> dict[str, Any]:
    """The run's rows in the results DB, its run record and HTML run report; the run summary."""
    from flows.run_report import write_run_report
    from flows.stages.evidence import record_run

    timings = {f"{k}_s": v for k, v in ctx.console.timings_s.items()}
    summary = record_run(catalog=ctx.catalog, store=ctx.store, config=ctx.config, ranking=ranking,
                         fusion_out=fusion_out, run_id=ctx.run_id, started=ctx.started, inputs=ctx.inputs,
                         skipped=ctx.skipped, timings=timings, log=ctx.console.detail,
                         stages_skipped=ctx.stages_skipped)
    summary["stages_skipped"] = list(ctx.stages_skipped)
    summary["radiology_rois"] = dict(ctx.radiology_counts)
    summary["counts"] = ctx.console.summary_rows()
    summary["input_files_hashed"] = ctx.hasher.files_read
    summary["wall_s"] = round((datetime.now(timezone.utc) - ctx.started).total_seconds(), 1)
    if ctx.config.patient_reports:  # after record_run: the reports read the run record and the ranking
        from flows.patients.cohort_reports import write_cohort_reports

        t0 = time.perf_counter()
        summary["patient_reports"] = str(write_cohort_reports(ctx.store.root, ctx.store.path("reports/patients"),
                                                              log=ctx.console.detail))
        ctx.console.detail(f"[report] patient reports in {time.perf_counter() - t0:.1f} s")
    summary["report"] = str(write_run_report(ctx.store, ctx.run_id, summary))
    return summary


# ------------------------------------------------------------------------------------------ flow
@contextlib.contextmanager
def threads_per_task(n: int):
    """Torch intra-op and BLAS / OpenMP threads capped at ``n`` for the run (restored after): the run already
    runs tasks side by side (two per-patient workers, two fusion processes), and nested thread pools on top
    oversubscribe the cores: spinning threads then burn CPU while they wait (15x on a shared machine)."""
    import os
    import sys

    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    torch = sys.modules.get("torch")  # not imported yet (a rerun may never need it): its OpenMP reads the env
    before = (torch.get_num_threads() if torch else None, os.environ.get("OMP_NUM_THREADS"))
    if torch:
        torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if before[1] is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before[1]
        torch = sys.modules.get("torch")
        if torch and before[0] is not None:
            torch.set_num_threads(before[0])


def start_reader_workers(ctx: RunContext) -> None:
    """The fork server of the isolated readers (flows.store.isolate) with the modules of every stage that
    reads a patient's files in a worker: radiology, slides, spatial samples. Whichever stage forks first, the
    others find their modules imported there. Started now, beside the first stages, when the run may read
    something; when the last finished run had the same inputs and config (``same_as_last_run``), only named:
    a rerun with nothing new then never starts it (its imports cost seconds of CPU), and a stage that does
    find work starts it at its first worker. With more than one fusion worker, the fusion pool's modules are
    named too: its workers fork from the same server (fusion.experiment_pool.worker_context), which then never
    restarts to add them."""
    from flows.stages.pathology import SLIDE_PRELOAD
    from flows.stages.radiology import RADIOLOGY_PRELOAD
    from flows.store.isolate import preload_fork_server, start_fork_server
    from fusion.experiment_pool import POOL_MODULES

    modules = (*RADIOLOGY_PRELOAD, *SLIDE_PRELOAD, "omics.spatial",
               *(POOL_MODULES if ctx.config.fusion_workers > 1 else ()))
    (preload_fork_server if same_as_last_run(ctx) else start_fork_server)(modules)


def same_as_last_run(ctx: RunContext) -> bool:
    """Whether the store's last finished run had this run's inputs and config (run ids end in their hash) and
    code (every stage's ``code_version``)."""
    from flows.config import run_code_version

    records = sorted(ctx.store.path("runs").glob("*Z-*.json"))
    records = [r for r in records if not r.name.endswith(".report.json")]
    if not records:
        return False
    try:
        last = json.loads(records[-1].read_text())
    except (OSError, ValueError):
        return False
    return (str(last.get("run_id", "")).rsplit("-", 1)[-1] == ctx.run_id.rsplit("-", 1)[-1]
            and last.get("code_version") == run_code_version())


@flow(name="fusionrx-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def fusionrx_pipeline(catalog_path: str, store_path: str, config_path: str | None = None,
                      verbosity: str = "normal") -> dict[str, Any]:
    """Run the whole pipeline over a catalog into a store (one run per store at a time); the run summary."""
    console = RunConsole(verbosity)
    with run_lock(store_path), contextlib.ExitStack() as threads:
        ctx = open_run(catalog_path, store_path, config_path, console)
        threads.enter_context(threads_per_task(ctx.config.torch_cpu_threads))
        start_reader_workers(ctx)  # after the thread caps: the workers inherit the fork server's environment
        omics = submit_omics(ctx)  # single-threaded: overlaps the imaging stages
        frames = radiology_stage(ctx)
        features_h5 = pathology_stage(ctx)
        bulk = omics_stage(ctx, omics)
        samples, spatial = spatial_stage(ctx, features_h5)
        if spatial is not None:
            frames["spatial"] = spatial
        ctx.hasher.save()
        fusion_out = fusion_stage(ctx, frames, features_h5, bulk)
        return results_stage(ctx, bulk, samples, fusion_out)


def make_task_runner(name: str, workers: int = 2, dask_address: str | None = None, processes: bool = True):
    """The Prefect task runner of the per-patient tasks: 'local' (threads) or 'dask' (prefect-dask: a
    running cluster at ``dask_address``, e.g. tcp://host:8786, else a local cluster of ``workers``)."""
    if name == "local":
        return ThreadPoolTaskRunner(max_workers=workers)
    if name == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            from fusion.errors import FusionRxError

            raise FusionRxError("--runner dask needs the prefect-dask package (pip install prefect-dask)") from exc
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": processes,
                                              "dashboard_address": None})
    raise ValueError(f"task runner must be one of {TASK_RUNNERS}, got {name!r}")


def run_pipeline(catalog_path: str | Path, store_path: str | Path, config_path: str | Path | None = None,
                 verbosity: str = "normal", runner: str = "local", workers: int = 2,
                 dask_address: str | None = None) -> dict:
    """Validate the catalog, config and store lock, then run the Prefect flow (a temporary local Prefect
    server is started when none is configured)."""
    load_catalog(catalog_path)  # fail fast, before any server starts
    load_run_config(config_path)
    with run_lock(store_path):  # refuse now, before a server starts, if another run holds the store
        pass
    from flows.prefect_server import prefect_api

    pipeline = fusionrx_pipeline.with_options(task_runner=make_task_runner(runner, workers, dask_address))
    with prefect_api() as api_ready:  # our own server, dying with this process, unless one is configured
        api_ready()
        return pipeline(str(catalog_path), str(store_path), str(config_path) if config_path else None, verbosity)
