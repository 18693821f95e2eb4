"""A new patient's report, in seconds: one patient's folder (a TCIA-style CT / PET DICOM study with its
RTSTRUCT / SEG / NIfTI segmentations, optionally a whole-slide image and a Visium sample) -> the run's readers
and ROI measurement -> the store's frozen encoders (and the cohort's spatial reference,
flows.patients.spatial) -> the store's deployed models -> the same report JSON as a cohort patient's.

No Prefect server and nothing written to the store: the steps are the stage functions the run composes
(``flows.stages.radiology.ingest_radiology`` / ``encode_volumes``, ``flows.stages.pathology.plan_slide`` /
``extract_features``), called in-process, each timed (``NewPatient.timings``). The patient's features equal the
run's for the same files, because the encoders are frozen (``volume_encoder: builtin``, and ``tile_encoder``
builtin, pretrained or the cohort encoder the store keeps); a store whose volume encoders were trained on
its cohort cannot encode a new patient and says so.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from fusion.errors import DicomSeriesError, FusionRxError

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn")
# the stages a reading room waits on once the study is read (the <= 3 s goal of a CT/PET-only patient); the
# one-time loads (store, models, cohort, encoders) are timed apart: a kept process does them once
AFTER_READ = ("roi", "patches", "encode_ct_pet", "slide_features", "spatial", "predict")


@dataclass
class NewPatient:
    """A new patient's report and how long each step took ({stage: seconds}, in order)."""

    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def after_read_s(self) -> float:
        """Seconds from the read study to the prediction (ROI, patches, encoders, slide, predict)."""
        return float(sum(v for k, v in self.timings.items() if k in AFTER_READ))


class _Clock:
    """Per-stage wall times (perf_counter), in the order the stages ran."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - t0


def find_study(folder: Path) -> tuple[Any, Any, list[Path], list[Path], str | None]:
    """The CT and PET series (``SeriesInfo``; the PET may be None), segmentation files, slide files and the
    DICOM PatientID of one patient's folder. DicomSeriesError naming the folder when it holds no CT or
    several patients."""
    from flows.stages.radiology_study import patient_segmentations, pick_ct_pet
    from imaging.dicom_index import index_dicom

    if not folder.is_dir():
        raise DicomSeriesError(f"{folder}: not a directory (a new patient's folder of DICOM series and slides)")
    index = index_dicom(folder)
    series = [s for s in index if s.modality in ("CT", "PT")]
    ct, pet = pick_ct_pet(series)
    if ct is None:
        found = sorted({s.modality for s in index}) or "no DICOM file"
        raise DicomSeriesError(f"{folder}: no CT series (Modality CT) found ({found}); a new patient's report "
                               "needs the CT (with its PET when there is one)")
    ids = sorted({s.patient_id for s in series if s.patient_id})
    if len(ids) > 1:
        raise DicomSeriesError(f"{folder}: DICOM tag PatientID holds several patients {ids}, expected one")
    segs = patient_segmentations(list(index), [folder])
    slides = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    return ct, pet, segs, slides, ids[0] if ids else None


def run_config(ps: Any) -> dict[str, Any]:
    """The store's latest run config (its run record), else the defaults."""
    cfg = ps.run_record.get("config")
    if cfg:
        return dict(cfg)
    from flows.config import load_run_config

    return load_run_config(None).to_dict()


@functools.lru_cache(maxsize=4)
def _frozen_volume_encoder(kind: str, patch_vox: int, spacing_mm: float, embed_dim: int) -> Any:
    """The shipped CT or PET encoder for the run's patch geometry, loaded (and its SHA-256 checked) once per
    process: the weights are frozen, so a reading-room process answers each new patient without reloading."""
    from imaging.frozen_encoders import builtin_volume_encoder

    return builtin_volume_encoder(kind, {"volume_patch_vox": patch_vox, "volume_patch_spacing_mm": spacing_mm,
                                         "volume_embed_dim": embed_dim})


def volume_encoders(cfg: dict[str, Any]) -> dict[str, Any]:
    """The run's frozen CT and PET volume encoders (FusionRxError when the run's volume encoders were trained
    on its cohort: those are not kept, so a new patient cannot be encoded like the cohort)."""
    from imaging.frozen_encoders import check_choice

    if check_choice("volume_encoder", cfg["volume_encoder"]) != "builtin":
        raise FusionRxError("run config volume_encoder: 'cohort' (trained on the run's patches and not kept): a "
                            "new patient's CT / PET cannot be encoded like the cohort's; rerun with "
                            "volume_encoder: builtin")
    geometry = (int(cfg["volume_patch_vox"]), float(cfg["volume_patch_spacing_mm"]), int(cfg["volume_embed_dim"]))
    return {kind: _frozen_volume_encoder(kind, *geometry) for kind in ("ct", "pet")}


def volume_features(result: Any, encoders: dict[str, Any]) -> dict[str, pd.Series]:
    """The patient's ct / pet fusion features as the run's ``encode_volumes`` makes them (ROI phenotypes
    beside the frozen encoder's embedding of the ROI-centred patch), one per volume the patient has."""
    from flows.stages.radiology import CT_FEATURES, PET_FEATURES
    from imaging.volume_encoder import embed_volumes

    with np.load(result.patch_npz) as z:
        patches = {"ct": z["ct_hu"], "pet": z["suv_bw"] if result.suv_npz else None}
    out = {}
    for kind, names, prefix in (("ct", CT_FEATURES, "ct_ae_"), ("pet", PET_FEATURES, "pet_ae_")):
        if patches[kind] is None:
            continue
        emb = embed_volumes(encoders[kind], patches[kind][None, None], batch_size=1)[0]
        row = pd.Series({**{k: result.phenotypes[k] for k in names},
                         **{f"{prefix}{j}": float(v) for j, v in enumerate(emb)}})
        if row.notna().all():  # the run drops a patient whose row has NaN (nothing measured)
            out[kind] = row
    return out


def tile_embedder(store: Path, cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The run's tile encoder and the config its tiles are cut with: the shipped or a pretrained encoder, or
    the cohort-trained one the store keeps (STORE/wsi/tile_encoder.pt)."""
    from imaging.pretrained_encoder import TileEmbedder, TileEncoderSpec, load_encoder, weights_sha256

    spec = TileEncoderSpec.from_config(cfg["tile_encoder"])
    if spec.kind == "builtin" and spec.weights is None:
        from flows.tasks import TILE_ENCODER
        from imaging.tile_encoder import load_tile_encoder

        path = store / TILE_ENCODER
        if not path.is_file():
            raise FusionRxError(f"{path}: the run's cohort tile encoder is missing; a new slide cannot be encoded")
        return TileEmbedder.from_builtin(load_tile_encoder(path, cfg["tile_feature_dim"]), weights_sha256(path)), cfg
    if spec.kind != "builtin":
        cfg = {**cfg, "tile_size": spec.tile_px, "target_mpp": spec.mpp or cfg["target_mpp"]}
    return load_encoder(spec), cfg


def _check_same_encoder(ps: Any, features_h5: Path) -> None:
    """Slide features of two encoders never meet: the new slide's encoder must be the cohort's."""
    import h5py

    if not ps.slides:
        return
    with h5py.File(next(iter(ps.slides.values())), "r") as a, h5py.File(features_h5, "r") as b:
        ours, theirs = str(b.attrs.get("weights_sha256", "")), str(a.attrs.get("weights_sha256", ""))
    if ours != theirs:
        raise FusionRxError(f"{features_h5}: tile encoder weights {ours[:12]}... differ from the cohort's "
                            f"{theirs[:12]}... (STORE/wsi); the run's encoder changed since the store was built")


def new_patient_report(folder: str | Path, store: Any, *, patient_id: str | None = None,
                       work_dir: str | Path | None = None) -> NewPatient:
    """The report of a patient who is not in the store's cohort, from their folder (module docstring).

    ``store``: the store's path, or a ``PatientStore`` kept between patients (a reading-room process: the
    deployed models and the cohort they are compared with are then read once).
    ``patient_id``: the report's id (default: the DICOM PatientID, else the folder name). ``work_dir``: where
    the patient's volumes, patches and slide features are written (default: a temporary folder removed at the
    end; give one to keep them, e.g. for the HTML renderer). Raises DicomSeriesError for a folder without a CT,
    FusionRxError when the store has no deployed model or its encoders cannot encode a new patient.
    """
    from flows.patients.build import PatientStore, assemble, neural_row, slide_attention, slide_section, target_section
    from flows.patients.spatial import find_spatial

    folder, clock = Path(folder), _Clock()
    with clock("load_store"):
        ps = store if isinstance(store, PatientStore) else PatientStore(store)
        cfg = run_config(ps)
        views = {t: ps.cohort(t) for t in ("diagnosis", "survival")}  # the cohort: neighbours, percentiles
        models = {t: v.model for t, v in views.items() if v is not None}
        if not models:
            raise FusionRxError(f"{ps.root}: no deployed model (STORE/models/diagnosis or survival); run "
                                "`fusionrx run` with deploy_models: true first")
    with clock("index"):
        ct_info, pet_info, segs, slides, tag_id = find_study(folder)
        sample = find_spatial(folder)
    pid = patient_id or tag_id or folder.name
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="newpt-")))
        work.mkdir(parents=True, exist_ok=True)
        result, mask, ct, roi_npz = _radiology(pid, ct_info, pet_info, segs, cfg, work, clock)
        with clock("load_encoders"):
            encoders = volume_encoders(cfg)
        with clock("encode_ct_pet"):
            flat = volume_features(result, encoders)
        features_h5 = None
        if slides:
            with clock("slide_features"):
                features_h5 = _slide_features(ps, pid, slides[0], cfg, work)
        spatial, spatial_note = None, None
        if sample is not None:
            with clock("spatial"):
                spatial, spatial_note = _spatial(ps, models, pid, sample, features_h5, cfg, work, flat)
        with clock("predict"):
            rows = _predict(ps, models, pid, flat, features_h5)
        with clock("explain_and_report"):
            report = assemble(ps, pid, rows, targets=target_section(ps, None), spatial=spatial,
                              slide=slide_section(features_h5, slide_attention(neural_row(rows.get("diagnosis")),
                                                                               features_h5, ps.root))
                              if features_h5 is not None else None,
                              radiology=_radiology_section(result, mask, ct, roi_npz, ct_info, pet_info,
                                                           bool(work_dir)))
        report["new_patient"] = {"folder": str(folder), "slide": str(slides[0]) if slides else None,
                                 "spatial_sample": str(sample) if sample else None, "spatial_note": spatial_note,
                                 "features": {k: v.to_dict() for k, v in flat.items()},
                                 "timings_s": dict(clock.times)}
    return NewPatient(report, dict(clock.times))


def _spatial(ps: Any, models: dict[str, Any], pid: str, sample: Path, features_h5: Path | None,
             cfg: dict[str, Any], work: Path, flat: dict[str, pd.Series]) -> tuple[dict | None, str | None]:
    """The new patient's spatial section and (into ``flat``) their spatial features when they cover what the
    deployed models take; (section, note on what is missing) — an unreadable sample gives (None, the error)."""
    from flows.patients.spatial import new_patient_spatial
    from fusion.errors import SpatialError

    try:
        section, features = new_patient_spatial(ps, pid, sample, features_h5, cfg, work)
    except SpatialError as exc:
        return None, f"spatial sample not read: {exc}"
    note = section.get("features_note")
    if features is not None:
        needed = {n for dm in models.values() if "spatial" in dm.modalities
                  for n in (dm.info.get("feature_names") or {}).get("spatial") or []}
        missing = sorted(needed - set(features.index))
        if missing:  # e.g. the DGI graph embedding (spatial_graph_features): its encoder is not kept
            note = f"the deployed models take spatial features {missing[:3]} that a new sample cannot get"
        else:
            flat["spatial"] = features
    return section, note


def _radiology_section(result: Any, mask: np.ndarray | None, ct: Any, roi_npz: Path | None, ct_info: Any,
                       pet_info: Any, kept: bool) -> dict[str, Any]:
    """The new patient's radiology section: the ROI just measured, its mask file (``kept``: in the work dir)."""
    from flows.patients.radiology import radiology_from_result, roi_bbox

    out = radiology_from_result(asdict(result), roi_bbox(mask, ct), ct_info.path, pet_info.path if pet_info else None)
    out["roi"].update({"from": "measured", "mask_npz": str(roi_npz) if kept and roi_npz else None})
    out["volumes"] = {"ct_hu": result.ct_npz, "suv_on_ct": result.suv_npz} if kept else None
    return out


def _radiology(pid: str, ct_info: Any, pet_info: Any, segs: list[Path], cfg: dict[str, Any], work: Path,
               clock: _Clock) -> tuple[Any, np.ndarray | None, Any, Path | None]:
    """``flows.stages.radiology.ingest_radiology`` step by step (each timed): read CT (HU) and PET (SUVbw),
    measure the ROI with the run's ROI patterns, resample, write the volumes, the ROI mask and the ROI-centred
    patches. Returns (the result, the CT mask, the CT, the ROI mask file)."""
    from flows.stages.radiology import RadiologyResult, fusion_features
    from flows.stages.radiology_study import measure_study
    from imaging.ct import read_ct
    from imaging.pet import read_pet_suv
    from imaging.resample import resample_to_reference
    from imaging.roi import RoiSpec, roi_centroid_mm
    from imaging.volume import crop_patch

    with clock("read_ct_pet"):
        ct = read_ct(ct_info.path)
        suv, pet_error = None, None
        if pet_info is not None:
            try:
                suv = read_pet_suv(pet_info.path)
            except DicomSeriesError as exc:
                pet_error = str(exc)
    with clock("roi"):
        spec = RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto"))
        study = measure_study(ct, suv, list(segs), spec, bool(cfg.get("radiomics", False)),
                              bool(cfg.get("radiomics_texture", False)))
    with clock("patches"):
        suv_on_ct = resample_to_reference(suv, ct, order=1, fill=0.0) if suv is not None else None
        centre = roi_centroid_mm(study.measurement, ct, suv)
        if centre is None:
            centre = ct.world_coords(np.asarray(ct.shape, dtype=float)[None] / 2.0)[0]
        phen = fusion_features(study.measurement.phenotypes)
        phen.update({f"tumour_centre_{a}_mm": float(c) for a, c in zip("xyz", centre)})
        size, spacing = cfg["volume_patch_vox"], cfg["volume_patch_spacing_mm"]
        ct_patch = crop_patch(ct, centre, size_vox=size, spacing_mm=spacing)
        suv_patch = (crop_patch(suv_on_ct, centre, size_vox=size, spacing_mm=spacing) if suv_on_ct is not None
                     else np.full_like(ct_patch, np.nan))
        patch = work / f"{pid}_patches.npz"
        np.savez(patch, ct_hu=ct_patch.astype(np.float32), suv_bw=suv_patch.astype(np.float32),
                 centre_mm=np.asarray(centre), spacing_mm=spacing)
    with clock("write_volumes"):
        from flows.stages.radiology import _without_paths

        ct_npz = _without_paths(ct).save_npz(work / f"{pid}_ct_hu.npz")
        suv_npz = _without_paths(suv_on_ct).save_npz(work / f"{pid}_suv_on_ct.npz") if suv_on_ct is not None else None
        roi_npz = study.write_roi(work, pid)
    result = RadiologyResult(patient_id=pid, phenotypes=phen, ct_npz=str(ct_npz),
                             suv_npz=str(suv_npz) if suv_npz else None, patch_npz=str(patch), pet_error=pet_error,
                             roi_row=study.phenotype_row(pid), lesions=study.lesion_rows(pid),
                             problems=study.problems)
    return result, study.measurement.ct_mask, ct, roi_npz


def _slide_features(ps: Any, pid: str, slide: Path, cfg: dict[str, Any], work: Path) -> Path:
    """The slide's tile features (``work/<pid>.h5``) with the run's tiling, stain normalisation and encoder."""
    from flows.stages.pathology import extract_features, plan_slide

    embedder, cfg = tile_embedder(ps.root, cfg)
    plan = plan_slide(pid, slide, cfg["tile_size"], cfg["target_mpp"], cfg["min_tissue"], cfg["seed"])
    out = extract_features(plan, embedder, work / f"{pid}.h5")
    _check_same_encoder(ps, out)
    return out


def _predict(ps: Any, models: dict[str, Any], pid: str, flat: dict[str, pd.Series],
             features_h5: Path | None) -> dict[str, tuple[Any, int]]:
    """Each deployed model's dataset, output and embedding of the new patient: {task: (view, 0)}."""
    from flows.patients.build import CohortView
    from flows.stages.pathology import slide_bag

    rows = {}
    for task, dm in models.items():
        inputs: dict[str, dict[str, np.ndarray]] = {}
        for m in dm.modalities:
            if m == "wsi" and features_h5 is not None:
                inputs[m] = {pid: slide_bag(features_h5)}
            elif m in flat:
                names = (dm.info.get("feature_names") or {}).get(m) or list(ps.embeddings[m].columns)
                missing = [c for c in names if c not in flat[m].index]
                if missing:
                    raise FusionRxError(f"deployed {task} model: modality '{m}' takes features {missing[:4]} "
                                        f"that the new patient's {m} encoding does not give "
                                        f"(found {list(flat[m].index)[:4]})")
                inputs[m] = {pid: flat[m][names].to_numpy(np.float64)}
        if not inputs:
            continue
        ds = dm.dataset(inputs)
        rows[task] = (CohortView(dm, ds, np.asarray(dm.predict(ds)), np.asarray(dm.embed(ds))), 0)
    if not rows:
        takes = sorted({m for d in models.values() for m in d.modalities})
        raise FusionRxError(f"patient {pid}: the deployed models take {takes}, the new patient has "
                            f"{sorted(flat) + (['wsi'] if features_h5 else [])}")
    return rows
