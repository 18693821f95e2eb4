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

from flows.patients.radiology import radiology_from_result, radiology_section, roi_bbox  # noqa: F401 (re-exported)
from flows.patients.spatial import spatial_section
from flows.patients.targets import patient_evidence, target_section  # noqa: F401 (re-exported)
from fusion.errors import FusionDataError, QueryError

N_NEIGHBOURS = 5        # nearest patients in the fused embedding
TASKS = ("diagnosis", "survival")
SLIDE_MIL = Path("models") / "diagnosis" / "slide_mil.pt"  # the run's slide attention model (the heatmap)


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

    model: Any  # fusion.deploy.DeployedModel or fusion.deploy_classical.DeployedClassical
    dataset: Any  # what model.dataset gives: fusion.data.MultimodalDataset or deploy_classical.TabularInputs
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
        return assemble(self, pid, rows, slide=store_slide_section(self, pid, neural_row(rows.get("diagnosis"))),
                        radiology=radiology_section(self, pid), spatial=spatial_section(self, pid),
                        targets=target_section(self, pid))


def neural_row(row: tuple[Any, int] | None) -> tuple[Any, int] | None:
    """``row`` when its model is a neural one (a FusionModel, which may have MIL attention), else None: a
    classical model takes a slide as its mean tile feature and gives no tile attention."""
    return row if row is not None and getattr(row[0].model, "kind", "neural") == "neural" else None


def model_name(dm: Any) -> str:
    """A deployed model's name: strategy, modalities and head, e.g. ``attention:ct+pet+wsi:cox``."""
    return ":".join([dm.strategy, "+".join(dm.modalities)] + ([dm.head] if dm.head else []))


def assemble(ps: PatientStore, pid: str, rows: dict[str, tuple[Any, int]], *, slide: dict | None,
             radiology: dict | None, spatial: dict | None, targets: list[dict]) -> dict[str, Any]:
    """The report JSON from the patient's row in each deployed model's dataset (``rows``: task -> (a view
    with ``model``/``dataset``/``output``/``embedding`` of the patient(s), row)) and the built sections.
    The cohort views (``ps.cohort``) give the risk percentile and the neighbours. The modality contributions
    are the model's own exact Shapley values (``model.shapley``: fusion.explain for a neural model,
    fusion.deploy_classical for a classical one)."""
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
                              "risk_unit": getattr(view.model, "risk_unit", "log-hazard")}
    task = "diagnosis" if "diagnosis" in rows else "survival" if "survival" in rows else None
    if task is not None:
        view, i = rows[task]
        dm = view.model
        sh = dm.shapley(view.dataset, i)
        report["modality_contributions"] = {
            "base_value": float(sh["base_value"]), "values": {k: float(v) for k, v in sh["values"].items()},
            "target_class": dm.classes[int(sh["predicted"])] if task == "diagnosis" else None,
            "value": float(sh["probability"]), "task": task}
    report["slide"] = slide
    report["radiology"] = radiology
    report["spatial"] = spatial
    report["neighbours"] = neighbours(ps, pid, rows[task] if task else None, task)
    report["targets"] = targets
    report["modalities"] = {t: [m for m, on in zip(v.model.modalities, v.model.presence(v.dataset)[i]) if on]
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
    files.append(root / SLIDE_MIL)
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


def slide_attention(row: tuple[Any, int] | None, features_h5: Path | None = None,
                    store: Path | None = None) -> np.ndarray | None:
    """The tile attention the report shows: the run's slide attention model (``store/models/diagnosis/
    slide_mil.pt``, fusion.slide_attention; its faithfulness on generated cohorts is in docs/explanations.md)
    over ``features_h5`` when the run saved one; else the deployed diagnosis model's own MIL attention (None:
    the model takes no slide, the patient has none, or the slide encoder has no attention)."""
    if store is not None and features_h5 is not None and (Path(store) / SLIDE_MIL).is_file():
        from flows.stages.pathology import slide_bag
        from fusion.slide_attention import tile_attention

        return np.asarray(tile_attention(Path(store) / SLIDE_MIL, slide_bag(features_h5)), dtype=float)
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
    return slide_section(ps.slides[pid], slide_attention(row, ps.slides[pid], ps.root))
