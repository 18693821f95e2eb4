"""One patient's report JSON from a run's store: the deployed models' predictions, their measured explanations
(exact modality Shapley values, MIL tile attention), the radiology ROI, the spatial tumour region, the nearest
patients in the fused embedding and the top-ranked targets with this patient's own evidence.

``build_report(store, patient_id)`` is the one entry point for a cohort patient; ``PatientStore`` reads each
artifact once and keeps it, so ``--all`` (flows/patients/cohort_reports.py) and a new patient
(flows/patients/new_patient.py) reuse the same reads and the same section builders. Keys: see
docs/patients.md. Values are JSON-ready (NaN becomes null).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.errors import DicomSeriesError, FusionDataError, QueryError

TOP_TARGETS = 10        # ranked targets listed with the patient's evidence
TOP_SPATIAL_GENES = 10  # genes most enriched in the patient's spatial tumour region
N_NEIGHBOURS = 5        # nearest patients in the fused embedding
TASKS = ("diagnosis", "survival")
TUMOUR_REGION_KEY = "tumour_region"  # = flows.stages.spatial_pseudobulk.TUMOUR_REGION_KEY (that module loads scanpy)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars / arrays as Python numbers / lists, paths as str and NaN / inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


@dataclass
class CohortView:
    """One deployed model over every cohort patient having one of its modalities: the dataset it takes, its
    output (diagnosis: calibrated probabilities [n, K]; survival: risk [n]) and the fused embedding [n, e]."""

    model: Any  # fusion.deploy.DeployedModel
    dataset: Any  # fusion.data.MultimodalDataset
    output: np.ndarray
    embedding: np.ndarray

    def index(self, patient_id: str) -> int | None:
        """The patient's row, None when the model sees none of the patient's modalities."""
        try:
            return self.dataset.patients.index(patient_id)
        except ValueError:
            return None


class PatientStore:
    """A run's store as the patient reports read it; each artifact is read on first use and kept."""

    def __init__(self, store: str | Path):
        self.root = Path(store)
        if not (self.root / "manifest.parquet").is_file():
            raise QueryError(f"{self.root}: not a FusionRx store (no manifest.parquet); run `fusionrx run` first")
        self._cohorts: dict[str, CohortView | None] = {}

    # ------------------------------------------------------------------------------------ artifacts
    @cached_property
    def clinical(self) -> pd.DataFrame:
        """clinical/clinical.parquet (patient_id -> primary_diagnosis, os_time_days, os_event, ...)."""
        path = self.root / "clinical" / "clinical.parquet"
        if not path.is_file():
            from flows.stages.bulk_omics import empty_clinical

            return empty_clinical()
        return pd.read_parquet(path)

    @cached_property
    def embeddings(self) -> dict[str, pd.DataFrame]:
        """{modality: patient-indexed features} of STORE/embeddings/<modality>.parquet."""
        return {p.stem: pd.read_parquet(p) for p in sorted((self.root / "embeddings").glob("*.parquet"))}

    @cached_property
    def slides(self) -> dict[str, Path]:
        """{patient: STORE/wsi/<patient>.h5} tile-feature files."""
        return {p.stem: p for p in sorted((self.root / "wsi").glob("*.h5"))}

    @cached_property
    def radiology(self) -> dict[str, Path]:
        """{patient: STORE/imaging/radiology/<patient>/} folders holding a result.json."""
        folder = self.root / "imaging" / "radiology"
        return {d.name: d for d in sorted(folder.glob("*")) if (d / "result.json").is_file()}

    @cached_property
    def spatial(self) -> dict[str, Path]:
        """{patient: STORE/spatial/<patient>/} processed spatial samples."""
        folder = self.root / "spatial"
        return {d.name: d for d in sorted(folder.glob("*")) if (d / "result.pkl").is_file()}

    @cached_property
    def discovery(self) -> Any:
        """The run's CT / PET series and segmentation files per patient (imaging/discovery.pkl), or None."""
        from flows.store.artifacts import load_pickle

        path = self.root / "imaging" / "discovery.pkl"
        return load_pickle(path) if path.is_file() else None

    @cached_property
    def bulk(self) -> Any:
        """The cohort's BulkOmics (omics/bulk_omics.pkl: tumour expression, copy number, MAF), or None."""
        from flows.store.artifacts import load_pickle

        path = self.root / "omics" / "bulk_omics.pkl"
        return load_pickle(path) if path.is_file() else None

    @cached_property
    def ranking(self) -> pd.DataFrame:
        """targets/ranking.parquet (gene, rank, score, per-evidence scores); empty without a ranking."""
        path = self.root / "targets" / "ranking.parquet"
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["gene", "rank", "score"])

    @cached_property
    def run_record(self) -> dict[str, Any]:
        """The latest finished run's record (runs/<run_id>.json), {} when the store has none."""
        runs = [json.loads(p.read_text()) for p in sorted((self.root / "runs").glob("*.json"))]
        return max(runs, key=lambda r: r.get("finished_utc", "")) if runs else {}

    # ------------------------------------------------------------------------------------- patients
    def patients(self) -> list[str]:
        """Every patient the store holds anything of (clinical record, embedding, slide, radiology, spatial)."""
        ids = set(map(str, self.clinical.index)) | set(self.slides) | set(self.radiology) | set(self.spatial)
        for frame in self.embeddings.values():
            ids |= set(map(str, frame.index))
        return sorted(ids)

    def require(self, patient_id: str) -> str:
        """``patient_id`` when the store holds it, else QueryError naming it (and a few known ids)."""
        known = self.patients()
        if patient_id not in known:
            raise QueryError(f"patient {patient_id!r} is not in the store {self.root} (no clinical record, "
                             f"embedding, slide, radiology or spatial sample of that id); it holds {len(known)} "
                             f"patients, e.g. {known[:3]}")
        return patient_id

    def modalities_of(self, patient_id: str) -> list[str]:
        """The fusion modalities the store has for the patient (embeddings, slide features)."""
        mods = [m for m, f in self.embeddings.items() if patient_id in f.index and f.loc[patient_id].notna().any()]
        return mods + (["wsi"] if patient_id in self.slides else [])

    def recorded_diagnosis(self, patient_id: str) -> str | None:
        """The patient's recorded primary diagnosis (clinical table), None when unknown."""
        if patient_id not in self.clinical.index or "primary_diagnosis" not in self.clinical:
            return None
        value = self.clinical.loc[patient_id, "primary_diagnosis"]
        return None if pd.isna(value) else str(value)

    # ---------------------------------------------------------------------------------------- models
    def model(self, task: str) -> Any:
        """The run's deployed ``task`` model (STORE/models/<task>/), None when the run saved none."""
        if not (self.root / "models" / task).is_dir():
            return None
        from fusion.deploy import load_deployed

        return load_deployed(self.root, task)

    def model_inputs(self, modalities: list[str], patients: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """{modality: {patient: raw vector [d] or bag [T, d]}} as ``DeployedModel.dataset`` takes them, for the
        patients having each modality (flat: STORE/embeddings/<m>.parquet; ``wsi``: STORE/wsi/<patient>.h5)."""
        from flows.stages.pathology import slide_bag

        out: dict[str, dict[str, np.ndarray]] = {}
        for m in modalities:
            if m in self.embeddings:
                frame = self.embeddings[m]
                rows = frame.loc[[p for p in patients if p in frame.index]]
                out[m] = {str(p): r.to_numpy(np.float64) for p, r in rows.iterrows() if r.notna().any()}
            elif m == "wsi":
                out[m] = {p: slide_bag(self.slides[p]) for p in patients if p in self.slides}
            else:
                raise FusionDataError(f"{self.root}: the deployed model takes modality {m!r}, but the store has "
                                      f"neither embeddings/{m}.parquet nor slide features for it")
        return out

    def cohort(self, task: str) -> CohortView | None:
        """The deployed ``task`` model applied to the whole cohort (kept), None without that model."""
        if task not in self._cohorts:
            dm = self.model(task)
            view = None
            if dm is not None:
                patients = [p for p in self.patients() if set(self.modalities_of(p)) & set(dm.modalities)]
                ds = dm.dataset(self.model_inputs(list(dm.modalities), patients))
                view = CohortView(dm, ds, np.asarray(dm.predict(ds)), np.asarray(dm.embed(ds)))
            self._cohorts[task] = view
        return self._cohorts[task]

    # ---------------------------------------------------------------------------------------- report
    def report(self, patient_id: str) -> dict[str, Any]:
        """The report of a cohort patient (keys: module docstring, docs/patients.md)."""
        pid = self.require(patient_id)
        views = {t: self.cohort(t) for t in TASKS}
        rows = {t: (v, v.index(pid)) for t, v in views.items() if v is not None and v.index(pid) is not None}
        return assemble(self, pid, rows, slide=store_slide_section(self, pid, rows.get("diagnosis")),
                        radiology=radiology_section(self, pid), spatial=spatial_section(self, pid),
                        targets=target_section(self, pid))


def model_name(dm: Any) -> str:
    """A deployed model's name: strategy, modalities and head, e.g. ``attention:ct+pet+wsi:cox``."""
    return ":".join([dm.strategy, "+".join(dm.modalities)] + ([dm.head] if dm.head else []))


def assemble(ps: PatientStore, pid: str, rows: dict[str, tuple[Any, int]], *, slide: dict | None,
             radiology: dict | None, spatial: dict | None, targets: list[dict]) -> dict[str, Any]:
    """The report JSON from the patient's row in each deployed model's dataset (``rows``: task -> (a view
    with ``model``/``dataset``/``output``/``embedding`` of the patient(s), row)) and the built sections.
    The cohort views (``ps.cohort``) give the risk percentile and the neighbours."""
    from fusion.explain import fusion_model_shapley

    report: dict[str, Any] = {"patient_id": pid, "diagnosis": None, "survival": None,
                              "modality_contributions": None}
    if "diagnosis" in rows:
        view, i = rows["diagnosis"]
        dm, probs = view.model, np.asarray(view.output[i], dtype=float)
        report["diagnosis"] = {"model": model_name(dm), "version": dm.version,
                               "predicted": dm.classes[int(np.argmax(probs))],
                               "probabilities": dict(zip(dm.classes, map(float, probs))),
                               "temperature": float(dm.temperature), "recorded": ps.recorded_diagnosis(pid)}
    if "survival" in rows:
        view, i = rows["survival"]
        risk = float(np.asarray(view.output)[i])
        cohort = ps.cohort("survival")
        report["survival"] = {"model": model_name(view.model), "version": view.model.version, "risk": risk,
                              "risk_percentile": float(100.0 * np.mean(np.asarray(cohort.output) <= risk)),
                              "risk_unit": "log-hazard"}
    task = "diagnosis" if "diagnosis" in rows else "survival" if "survival" in rows else None
    if task is not None:
        view, i = rows[task]
        dm = view.model
        sh = fusion_model_shapley(dm.model, view.dataset, i, temperature=float(dm.temperature))
        report["modality_contributions"] = {
            "base_value": float(sh["base_value"]), "values": {k: float(v) for k, v in sh["values"].items()},
            "target_class": dm.classes[int(sh["predicted"])] if task == "diagnosis" else None,
            "value": float(sh["probability"]), "task": task}
    report["slide"] = slide
    report["radiology"] = radiology
    report["spatial"] = spatial
    report["neighbours"] = neighbours(ps, pid, rows[task] if task else None, task)
    report["targets"] = targets
    report["modalities"] = {t: [m for m in v.model.modalities
                                if m in v.dataset.modalities and bool(v.dataset.modalities[m].present[i])]
                            for t, (v, i) in rows.items()}
    report["run"] = {"run_id": ps.run_record.get("run_id"), "store": str(ps.root.resolve()),
                     "code_version": _code_version()}
    return json_safe(report)


def neighbours(ps: PatientStore, pid: str, row: tuple[Any, int] | None, task: str | None,
               k: int = N_NEIGHBOURS) -> list[dict[str, Any]]:
    """The ``k`` cohort patients nearest to the patient in the deployed model's fused embedding (Euclidean),
    the patient itself left out, with their recorded diagnosis."""
    if row is None:
        return []
    view, i = row
    cohort = ps.cohort(task)
    e = np.asarray(view.embedding, dtype=float)[i]
    d = np.linalg.norm(np.asarray(cohort.embedding, dtype=float) - e[None], axis=1)
    order = [j for j in np.argsort(d, kind="stable") if cohort.dataset.patients[j] != pid][:k]
    return [{"patient_id": cohort.dataset.patients[j], "distance": float(d[j]),
             "diagnosis": ps.recorded_diagnosis(cohort.dataset.patients[j])} for j in order]


def _code_version() -> str:
    from flows.config import code_version

    return code_version("fusion")


_KEPT: dict[Path, tuple[tuple, PatientStore]] = {}
_KEPT_LOCK = threading.Lock()


def _store_state(root: Path) -> tuple:
    """What a kept PatientStore depends on: the manifest, the deployed models and the run records (stat)."""
    files = [root / "manifest.parquet", root / "runs"] + [root / "models" / t / "model.json" for t in TASKS]
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)


def patient_store(store: str | Path) -> PatientStore:
    """The store's PatientStore, kept while the store is unchanged (a new run, manifest entry or deployed model
    makes a new one): repeated reports (the API, ``--all``) read the cohort and apply the models once."""
    root = Path(store).resolve()
    state = _store_state(root)
    with _KEPT_LOCK:
        kept = _KEPT.get(root)
        if kept is None or kept[0] != state:
            kept = (state, PatientStore(root))
            _KEPT[root] = kept
        return kept[1]


def build_report(store: str | Path, patient_id: str) -> dict[str, Any]:
    """The report JSON of one cohort patient of a run's store (QueryError naming an unknown patient)."""
    return patient_store(store).report(patient_id)


def list_patients(store: str | Path) -> list[dict[str, Any]]:
    """Every patient of the store: [{patient_id, diagnosis (recorded), modalities}]."""
    ps = patient_store(store)
    return [{"patient_id": p, "diagnosis": ps.recorded_diagnosis(p), "modalities": ps.modalities_of(p)}
            for p in ps.patients()]


# ------------------------------------------------------------------------------------------- sections
def slide_section(features_h5: Path, attention: np.ndarray | None) -> dict[str, Any]:
    """The slide and every tile of its feature file, in the file's order: level-0 top-left (x, y), side in
    level-0 px and the MIL attention weight (None without one). ``mpp`` is the level-0 resolution (um/px),
    ``tile_mpp`` that of the tiles the encoder saw."""
    import h5py

    with h5py.File(features_h5, "r") as f:
        coords = np.asarray(f["coords_level0"][()], dtype=np.int64)
        size0, tile_mpp = int(f.attrs["tile_size_level0"]), float(f.attrs["mpp"])
        tile_px, path = int(f.attrs.get("tile_size", size0)), str(f.attrs["slide_path"])
    if attention is not None and len(attention) != len(coords):
        raise FusionDataError(f"{features_h5}: {len(coords)} tiles but {len(attention)} attention weights")
    att = [None] * len(coords) if attention is None else [float(a) for a in attention]
    return {"path": path, "features_h5": str(features_h5), "mpp": tile_mpp * tile_px / size0, "tile_mpp": tile_mpp,
            "tiles": [{"x": int(x), "y": int(y), "size_px": size0, "attention": a}
                      for (x, y), a in zip(coords, att)]}


def slide_attention(row: tuple[Any, int] | None) -> np.ndarray | None:
    """The deployed diagnosis model's MIL attention over the patient's tiles (None: the model takes no slide, the
    patient has none, or the slide encoder has no attention)."""
    if row is None or "wsi" not in row[0].model.modalities:
        return None
    from fusion.explain import bag_attention

    view, i = row
    if "wsi" not in view.dataset.modalities or not bool(view.dataset.modalities["wsi"].present[i]):
        return None
    try:
        return np.asarray(bag_attention(view.model.model, view.dataset, i, "wsi"), dtype=float)
    except FusionDataError:  # an encoder without MIL attention (mean pooling, instance-level strategies)
        return None


def store_slide_section(ps: PatientStore, pid: str, row: tuple[Any, int] | None) -> dict[str, Any] | None:
    """The slide section of a cohort patient (None without slide features)."""
    if pid not in ps.slides:
        return None
    return slide_section(ps.slides[pid], slide_attention(row))


def _series(path: Path | None) -> dict[str, Any] | None:
    """A DICOM series folder as the report names it: path, SeriesInstanceUID, number of files."""
    if path is None:
        return None
    from imaging.dicom_frames import read_header

    files = sorted(p for p in Path(path).iterdir() if p.is_file())
    uid = None
    for f in files:
        try:
            uid = str(read_header(f, ["SeriesInstanceUID"]).SeriesInstanceUID)
            break
        except (DicomSeriesError, AttributeError):  # a damaged file of the series: try the next one
            continue
    return {"path": str(path), "series_uid": uid, "n_files": len(files)}


def roi_bbox(mask: np.ndarray | None, volume: Any) -> dict[str, Any] | None:
    """The ROI's bounding box on the CT grid: voxel indices [k, j, i] (inclusive) and the LPS mm (x, y, z) of
    those corner voxels' centres; None without an ROI."""
    if mask is None or not mask.any():
        return None
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    mm = volume.world_coords(np.stack([lo, hi]).astype(float))
    return {"ijk_min": lo.tolist(), "ijk_max": hi.tolist(), "mm_min": mm[0].tolist(), "mm_max": mm[1].tolist()}


def radiology_from_result(result: dict[str, Any], bbox: dict | None, ct_dir: Path | None,
                          pet_dir: Path | None) -> dict[str, Any]:
    """The radiology section from an ingest result (``RadiologyResult`` as a dict): the fusion phenotypes
    and the ROI row's measures, the ROI (source, label, volume, bounding box) and the series read."""
    row = dict(result.get("roi_row") or {})
    phen = {**{k: v for k, v in row.items() if k not in ("patient_id", "roi", "roi_source")},
            **result.get("phenotypes", {})}
    roi = {"source": row.get("roi_source"), "label": row.get("roi"), "volume_ml": row.get("volume_ml"),
           "bbox": bbox}
    return {"phenotypes": phen, "roi": roi, "ct_series": _series(ct_dir), "pet_series": _series(pet_dir),
            "pet_error": result.get("pet_error")}


def patient_roi(ps: PatientStore, pid: str) -> tuple[Any, str | None, np.ndarray | None]:
    """A cohort patient's CT (HU), ROI label and ROI mask on the CT grid, measured as the run measured it (its
    ROI patterns over the patient's segmentations, else the automatic lesion; the PET part on the stored SUV
    resampled to the CT grid)."""
    from flows.stages.radiology_study import measure_study
    from imaging.roi import RoiSpec
    from imaging.volume import Volume

    folder = ps.radiology[pid]
    result = json.loads((folder / "result.json").read_text())
    ct = Volume.load_npz(folder / result["ct_npz"])
    suv = Volume.load_npz(folder / result["suv_npz"]) if result.get("suv_npz") else None
    cfg = ps.run_record.get("config", {})
    segs = list(getattr(ps.discovery, "segmentations", {}).get(pid, [])) if ps.discovery is not None else []
    spec = RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto"))
    study = measure_study(ct, suv, [Path(s) for s in segs if Path(s).exists()], spec)
    return ct, study.measurement.roi, study.measurement.ct_mask


def radiology_section(ps: PatientStore, pid: str) -> dict[str, Any] | None:
    """The radiology section of a cohort patient (None without CT)."""
    if pid not in ps.radiology:
        return None
    result = json.loads((ps.radiology[pid] / "result.json").read_text())
    ct, label, mask = patient_roi(ps, pid)
    disc = ps.discovery
    same = label == (result.get("roi_row") or {}).get("roi")  # else a segmentation file moved: no box
    out = radiology_from_result(result, roi_bbox(mask, ct) if same else None, disc.cts.get(pid) if disc else None,
                                disc.pets.get(pid) if disc else None)
    out["volumes"] = {"ct_hu": str(ps.radiology[pid] / result["ct_npz"]),
                      "suv_on_ct": str(ps.radiology[pid] / result["suv_npz"]) if result.get("suv_npz") else None}
    return out


def spatial_section(ps: PatientStore, pid: str, n_genes: int = TOP_SPATIAL_GENES) -> dict[str, Any] | None:
    """The patient's spatial sample: every spot (barcode, x, y, in the tumour region or not), the tumour-region
    spots and the genes most enriched there (log2 fold change vs the other spots). Coordinates are slide
    level-0 px when the sample is linked to its slide (``coords``), else Visium full-resolution px."""
    if pid not in ps.spatial:
        return None
    import anndata as ad

    from flows.store.artifacts import load_pickle
    from omics.spaceranger import SLIDE_TRANSFORM_KEY

    folder = ps.spatial[pid]
    res = load_pickle(folder / "result.pkl")
    h5ad = folder / Path(res["h5ad"]).name
    adata = ad.read_h5ad(h5ad)
    transform = adata.uns.get(SLIDE_TRANSFORM_KEY)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    if transform is not None:  # = flows.stages.spatial.spots_in_slide_px (not imported: it loads scanpy)
        t = np.asarray(transform, dtype=float)
        xy = xy @ t[:2, :2].T + t[:2, 2]
    region = (adata.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool) if TUMOUR_REGION_KEY in adata.obs
              else np.zeros(adata.n_obs, dtype=bool))
    spots = [{"barcode": str(b), "x": float(x), "y": float(y), "tumour": bool(t)}
             for b, (x, y), t in zip(adata.obs_names, xy, region)]
    enr = res.get("enrichment")
    top = [] if enr is None else [{"gene": str(g), "log2fc": float(r["log2_fold_change"]), "fdr": float(r["fdr"])}
                                  for g, r in enr.sort_values("log2_fold_change", ascending=False,
                                                              kind="stable").head(n_genes).iterrows()]
    return {"sample": str(h5ad), "coords": "slide_level0_px" if transform is not None else "visium_fullres_px",
            "slide_link": res.get("slide_link"), "n_spots": int(adata.n_obs),
            "tumour_spots": [{k: s[k] for k in ("barcode", "x", "y")} for s in spots if s["tumour"]],
            "spots": spots, "top_genes": top}


def patient_evidence(ps: PatientStore, pid: str, genes: list[str]) -> dict[str, dict[str, Any]]:
    """Per gene, the patient's own evidence: ``expression_z`` (its primary tumour's log2(CPM+1) as a z-score
    over the cohort's tumours, sample standard deviation), ``copy_number`` (its gene-level call, -2..2),
    ``mutation`` (its non-silent MAF records as 'Variant_Classification HGVSp_Short'; [] when none, None
    without a MAF for the cohort) and ``spatial_enrichment`` (log2 fold change of the gene in its spatial tumour
    region). None where the patient or the cohort lacks that data."""
    bulk = ps.bulk
    out = {g: {"expression_z": None, "copy_number": None, "mutation": None, "spatial_enrichment": None}
           for g in genes}
    tum = getattr(bulk, "tumour", None)
    if tum is not None and pid in tum.obs_names:
        have = [g for g in genes if g in tum.var_names]
        x = tum[:, have].X
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=float)
        sd = x.std(axis=0, ddof=1)
        z = (x[list(tum.obs_names).index(pid)] - x.mean(axis=0)) / np.where(sd > 0, sd, np.nan)
        for g, v in zip(have, z):
            out[g]["expression_z"] = float(v)
    cn = getattr(bulk, "copy_number", None)
    if cn is not None and pid in cn.columns:
        for g in genes:
            if g in cn.index and pd.notna(cn.loc[g, pid]):
                out[g]["copy_number"] = int(cn.loc[g, pid])
    maf = getattr(bulk, "maf", None)
    if maf is not None:
        from omics.gdc import NON_SILENT_CLASSES

        mine = maf.loc[(maf["patient_id"] == pid) & maf["Variant_Classification"].isin(NON_SILENT_CLASSES)]
        prot = mine["HGVSp_Short"] if "HGVSp_Short" in mine else pd.Series("", index=mine.index)
        for g in genes:
            hit = mine["Hugo_Symbol"] == g
            out[g]["mutation"] = [f"{c} {p}" if isinstance(p, str) and p else str(c)
                                  for c, p in zip(mine.loc[hit, "Variant_Classification"], prot[hit])]
    if pid in ps.spatial:
        from flows.store.artifacts import load_pickle

        enr = load_pickle(ps.spatial[pid] / "result.pkl").get("enrichment")
        if enr is not None:
            for g in genes:
                if g in enr.index:
                    out[g]["spatial_enrichment"] = float(enr.loc[g, "log2_fold_change"])
    return out


def target_section(ps: PatientStore, pid: str | None, top: int = TOP_TARGETS) -> list[dict[str, Any]]:
    """The run's top-ranked targets (gene, rank, score) with the patient's own evidence (all None for a
    patient the store has no omics of, e.g. a new patient)."""
    ranked = ps.ranking.sort_values("rank").head(top)
    genes = [str(g) for g in ranked["gene"]]
    ev = patient_evidence(ps, pid, genes) if pid is not None else {
        g: {"expression_z": None, "copy_number": None, "mutation": None, "spatial_enrichment": None} for g in genes}
    return [{"gene": g, "rank": int(r), "score": float(s), "evidence": ev[g]}
            for g, r, s in zip(genes, ranked["rank"], ranked["score"])]
