"""Stage: CT/PET DICOM series -> HU and SUV volumes on the CT grid, phenotypes, tumour-centred patches."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from flows.catalog.schema import Source
from flows.skipped import Skipped
from imaging.dicom_index import SeriesInfo
from fusion.errors import DicomSeriesError
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.resample import resample_to_reference
from imaging.roi import RoiSpec, roi_centroid_mm
from imaging.volume import Volume

# fusion features of the measured ROI: CT (HU, on the CT grid) and PET (SUVbw, on the PET grid)
CT_FEATURES = ("ct_tumour_volume_ml", "ct_tumour_diameter_mm", "ct_tumour_mean_hu")
PET_FEATURES = ("suv_max", "suv_mean", "suv_peak", "mtv_ml", "tlg")


@dataclass
class RadiologyResult:
    """One patient's radiology outputs (paths in the store plus the phenotype row)."""

    patient_id: str
    phenotypes: dict[str, float]
    ct_npz: str
    suv_npz: str | None
    patch_npz: str
    pet_error: str | None = None
    roi_row: dict[str, Any] = field(default_factory=dict)       # the `fusionrx phenotypes` row
    lesions: list[dict[str, Any]] = field(default_factory=list)  # one row per matching ROI
    problems: list[Skipped] = field(default_factory=list)  # segmentations that could not be used


class RadiologySeries(NamedTuple):
    """What a radiology source holds: CT and PET series folders and segmentation files per patient."""

    cts: dict[str, Path]
    pets: dict[str, Path]
    skipped: list[Skipped]
    segmentations: dict[str, list[Path]]


def discover_series(root: Path, id_map: dict[str, str] | None = None) -> dict[str, Path]:
    """Series folders under a source root, keyed by patient id (folder name, through the id map)."""
    id_map = id_map or {}
    return {id_map.get(p.name, p.name): p for p in sorted(root.iterdir()) if p.is_dir()}


def _skip(source: str, path: object, error: str) -> Skipped:
    return Skipped(source, str(path), error)


def select_radiology_series(series: list[SeriesInfo], id_map: dict[str, str] | None = None
                            ) -> tuple[dict[str, Path], dict[str, Path], list[Skipped]]:
    """Header-indexed series -> one CT and (when there is one) its PET per patient, plus skip records.

    Pairing is `imaging.dicom_index.pair_ct_pet` (same FrameOfReferenceUID, else same study). A PET
    with no CT, extra CT/PET series, and series whose folder also holds other series' files (the
    readers take one folder per series) are reported, never silently dropped.
    """
    from imaging.dicom_index import pair_ct_pet

    id_map = id_map or {}
    skipped: list[Skipped] = []
    usable = []
    for s in series:
        if s.modality not in ("CT", "PT"):
            continue
        shared = [o for o in series if o is not s and (o.path == s.path or s.path in o.path.parents)]
        if shared:
            skipped.append(_skip("ct" if s.modality == "CT" else "pet", s.path,
                                 f"DicomSeriesError: folder holds series {s.series_uid} and {len(shared)} other "
                                 "series; one folder per series is needed to read it"))
        else:
            usable.append(s)
    cts: dict[str, Path] = {}
    pets: dict[str, Path] = {}
    pairs = sorted(pair_ct_pet(usable), key=lambda p: (p.ct is None, p.pet is None, -(p.ct.n_files if p.ct else 0)))
    for pair in pairs:
        pid = id_map.get((pair.ct or pair.pet).patient_id, (pair.ct or pair.pet).patient_id)
        if pair.ct is None:
            has_ct = any(c.modality == "CT" and c.patient_id == pair.pet.patient_id for c in usable)
            reason = ("shares neither FrameOfReferenceUID nor StudyInstanceUID with a CT of" if has_ct
                      else "has no CT series to pair with (radiology needs a CT) for")
            skipped.append(_skip("pet", pair.pet.path, f"DicomSeriesError: PET series {pair.pet.series_uid} "
                                 f"{reason} patient {pid}"))
        elif pid not in cts:
            cts[pid] = pair.ct.path
            if pair.pet is not None:
                pets[pid] = pair.pet.path
        else:
            for s in (pair.ct, pair.pet):
                if s is not None and s.path not in (cts[pid], pets.get(pid)):
                    kind = "CT" if s.modality == "CT" else "PET"
                    skipped.append(_skip("ct" if kind == "CT" else "pet", s.path,
                                         f"another {kind} series of {pid}; the pipeline uses "
                                         f"{cts[pid] if kind == 'CT' else pets.get(pid)}"))
    return cts, pets, skipped


def _segmentations_by_patient(series: list[SeriesInfo], id_map: dict[str, str], cts: dict[str, Path],
                              pets: dict[str, Path]) -> dict[str, list[Path]]:
    """RTSTRUCT / SEG files per patient (same PatientID; same frame of reference as its CT or PET when the
    segmentation names one), plus NIfTI masks under the patient's study folder."""
    from flows.stages.radiology_study import patient_segmentations

    frames = {s.path: s.frame_of_reference_uid for s in series if s.modality in ("CT", "PT")}
    out: dict[str, list[Path]] = {}
    for pid, ct in cts.items():
        own_frames = {frames.get(ct), frames.get(pets.get(pid))} - {None, ""}
        segs = [s for s in series if s.modality in ("RTSTRUCT", "SEG")
                and id_map.get(s.patient_id, s.patient_id) == pid
                and (not s.frame_of_reference_uid or not own_frames or s.frame_of_reference_uid in own_frames)]
        study = Path(os.path.commonpath([ct, *([pets[pid]] if pid in pets else [])]))
        study = study.parent if study == ct else study  # a lone CT series folder: the folder holding it
        out[pid] = patient_segmentations(segs, [study] if len(study.parts) > 1 else [])
    return out


def discover_radiology(ct_src: Source, pet_src: Source | None) -> RadiologySeries:
    """CT and PET series folders and segmentation files per patient for the catalog's ct/pet sources, plus
    skip records.

    Format 'dicom': series found by reading headers anywhere under the source path (TCIA layouts,
    non-telling names), RTSTRUCT / SEG found the same way. Format 'dicom_series': one folder per patient;
    a PET folder whose patient has no CT folder is reported.
    """
    if ct_src.format == "dicom" or (pet_src is not None and pet_src.format == "dicom"):
        from imaging.dicom_index import index_dicom

        roots = list(dict.fromkeys([ct_src.path] + ([pet_src.path] if pet_src is not None else [])))
        index = index_dicom(roots)
        cts, pets, skipped = select_radiology_series(list(index), ct_src.id_map)
        segs = _segmentations_by_patient(list(index), ct_src.id_map, cts, pets)
        return RadiologySeries(cts, pets, [_skip("ct", p, f"DicomSeriesError: {e}") for p, e in index.problems]
                               + skipped, segs)
    cts = discover_series(ct_src.path, ct_src.id_map)
    pets = discover_series(pet_src.path, pet_src.id_map) if pet_src is not None else {}
    orphans = [_skip("pet", d, f"DicomSeriesError: PET folder of patient {pid} has no CT folder in "
                     f"{ct_src.path} (radiology needs a CT)") for pid, d in pets.items() if pid not in cts]
    return RadiologySeries(cts, {k: v for k, v in pets.items() if k in cts}, orphans, {})


# the modules a radiology worker needs, imported once in the fork server (flows.store.isolate)
RADIOLOGY_PRELOAD = ("flows.stages.radiology", "flows.stages.radiology_study", "imaging.volume", "numcodecs")


def ingest_radiology(patient_id: str, ct_dir: Path, pet_dir: Path | None, out_dir: Path,
                     patch_vox: int, patch_spacing_mm: float, seg_files: list[Path] = (),
                     roi_spec: RoiSpec | None = None, radiomics: bool = False,
                     texture: bool = False, isolate: bool = True) -> RadiologyResult:
    """Read CT (HU) and PET (SUVbw), measure the patient's ROI (segmentations matching ``roi_spec``, else its
    fallback: the automatic lesion, as ``fusionrx radiology`` does), resample PET onto CT, write the
    volumes, the measured ROI (``<patient>_roi.npz``: its box on the CT grid and the mask,
    flows.stages.radiology_study.write_roi_npz) and the ROI-centred patches.

    With ``isolate`` (the default) the whole patient (every series and segmentation file it reads, and the
    measurement) runs in one worker process (``flows.store.isolate``): a reader that dies in native code
    (a DICOM codec, a segfault, the memory killer) fails this patient's radiology, named, and the run goes
    on. One fork per patient, not per file: the volumes stay in the worker, only the small result comes back.

    A bad CT raises DicomSeriesError (the patient's radiology is skipped), so does a worker that dies
    ("<ct_dir>: the reader died in native code (killed by signal SIGABRT (6)) ..."); a bad PET is reported
    in ``pet_error`` and the CT part is kept.
    """
    args = (patient_id, Path(ct_dir), Path(pet_dir) if pet_dir is not None else None, Path(out_dir), patch_vox,
            patch_spacing_mm, [Path(f) for f in seg_files], roi_spec, radiomics, texture)
    if not isolate:
        return measure_radiology(*args)
    from flows.store.isolate import run_isolated

    return run_isolated(measure_radiology, *args, what=str(ct_dir), error=DicomSeriesError,
                        preload=RADIOLOGY_PRELOAD)


def measure_radiology(patient_id: str, ct_dir: Path, pet_dir: Path | None, out_dir: Path, patch_vox: int,
                      patch_spacing_mm: float, seg_files: list[Path] = (), roi_spec: RoiSpec | None = None,
                      radiomics: bool = False, texture: bool = False) -> RadiologyResult:
    """``ingest_radiology`` in the calling process (what its worker runs): the same arguments and result."""
    from flows.stages.radiology_study import measure_study
    from imaging.volume import crop_patch  # torch-free: an ingest worker never imports torch

    ct = read_ct(ct_dir)
    tag_pid = ct.meta.get("patient_id")
    if tag_pid and tag_pid != patient_id:
        # the header's PatientID (a hospital record number) stays out of the message and the run report
        raise DicomSeriesError(f"{ct_dir}: the series' PatientID tag does not match the catalogued patient "
                               f"'{patient_id}'")
    suv: Volume | None = None
    pet_error = None
    if pet_dir is not None:
        try:
            suv = read_pet_suv(pet_dir)
        except DicomSeriesError as exc:
            pet_error = str(exc)
    study = measure_study(ct, suv, list(seg_files), roi_spec or RoiSpec(), radiomics, texture)
    suv_on_ct = resample_to_reference(suv, ct, order=1, fill=0.0) if suv is not None else None
    centre = roi_centroid_mm(study.measurement, ct, suv)
    if centre is None:  # nothing measured: centre of the volume
        centre = ct.world_coords(np.asarray(ct.shape, dtype=float)[None] / 2.0)[0]
    phen = fusion_features(study.measurement.phenotypes)
    phen.update({f"tumour_centre_{a}_mm": float(c) for a, c in zip("xyz", centre)})
    out_dir.mkdir(parents=True, exist_ok=True)
    ct_npz = _without_paths(ct).save_npz(out_dir / f"{patient_id}_ct_hu.npz")
    suv_npz = (_without_paths(suv_on_ct).save_npz(out_dir / f"{patient_id}_suv_on_ct.npz")
               if suv_on_ct is not None else None)
    study.write_roi(out_dir, patient_id)  # <patient>_roi.npz: the ROI's box + mask on the CT grid (patient reports)
    ct_patch = crop_patch(ct, centre, size_vox=patch_vox, spacing_mm=patch_spacing_mm)
    suv_patch = (crop_patch(suv_on_ct, centre, size_vox=patch_vox, spacing_mm=patch_spacing_mm)
                 if suv_on_ct is not None else np.full_like(ct_patch, np.nan))
    patch_path = out_dir / f"{patient_id}_patches.npz"
    tmp = patch_path.with_name(f".{patch_path.name}.tmp.npz")
    np.savez_compressed(tmp, ct_hu=ct_patch.astype(np.float32), suv_bw=suv_patch.astype(np.float32),
                        centre_mm=np.asarray(centre), spacing_mm=patch_spacing_mm)
    tmp.replace(patch_path)
    return RadiologyResult(patient_id=patient_id, phenotypes=phen, ct_npz=str(ct_npz),
                           suv_npz=str(suv_npz) if suv_npz else None, patch_npz=str(patch_path),
                           pet_error=pet_error, roi_row=study.phenotype_row(patient_id),
                           lesions=study.lesion_rows(patient_id), problems=study.problems)


def _without_paths(volume: Volume) -> Volume:
    """The volume without the site's folder and file paths in its meta (hospital exports are often named after
    the patient): what the store keeps."""
    from dataclasses import replace

    return replace(volume, meta={k: v for k, v in volume.meta.items() if k not in ("source_dir", "files")})


def fusion_features(phenotypes: dict[str, Any]) -> dict[str, float]:
    """The fusion model's radiology features of the measured ROI (NaN when nothing was measured):
    CT volume (ml), sphere-equivalent diameter (mm), mean HU; SUVmax, SUVmean, SUVpeak, MTV (ml), TLG."""
    nan = float("nan")
    volume_ml = float(phenotypes.get("volume_ml_ct", nan))
    return {"ct_tumour_volume_ml": volume_ml,
            "ct_tumour_diameter_mm": float(2.0 * (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)),
            "ct_tumour_mean_hu": float(phenotypes.get("ct_mean_hu", nan)),
            **{k: float(phenotypes.get(k, nan)) for k in PET_FEATURES}}


def load_patches(results: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stack the CT (HU) and SUV patches of ingested patients: ids, ct [N,1,D,H,W], suv [N,1,D,H,W]."""
    ids, ct, suv = [], [], []
    for r in results:
        with np.load(r["patch_npz"]) as z:
            ids.append(r["patient_id"])
            ct.append(z["ct_hu"][None])
            suv.append(z["suv_bw"][None])
    return ids, np.stack(ct), np.stack(suv)


def volume_encoder(kind: str, patches: np.ndarray, cfg: dict, seed: int) -> tuple[Any, str]:
    """The CT or PET encoder of a run and what it is: the shipped frozen one (``volume_encoder: builtin``,
    recorded by its weights' SHA-256) or one trained on the cohort's ``patches`` (``cohort``)."""
    from imaging.frozen_encoders import VOLUME, builtin_volume_encoder, check_choice, weights_sha256
    from imaging.volume_encoder import fit_volume_autoencoder

    if check_choice("volume_encoder", cfg["volume_encoder"]) == "builtin":
        return builtin_volume_encoder(kind, cfg), f"builtin:{weights_sha256(VOLUME[kind])}"
    enc = fit_volume_autoencoder(patches, embed_dim=cfg["volume_embed_dim"], epochs=cfg["volume_encoder_epochs"],
                                 seed=seed)
    return enc, f"cohort:{len(patches)} patients"


def encode_volumes(results: list[dict[str, Any]], cfg: dict) -> dict[str, Any]:
    """CT and SUV patch embeddings from the run's volume encoders (the shipped frozen ones by default, or
    trained on the cohort) -> {'ct', 'pet', 'phenotypes', 'encoders'} with the tables indexed by patient (PET
    only with >= 4 PET patients); 'encoders' names each encoder (frozen: its weights' SHA-256)."""
    import pandas as pd

    from imaging.volume_encoder import embed_volumes

    ids, ct, suv = load_patches(results)
    phen = pd.DataFrame([r["phenotypes"] for r in results], index=ids)
    ct_enc, ct_name = volume_encoder("ct", ct, cfg, cfg["seed"])
    # one patch per forward pass: a patient's embedding never depends on which patients share its batch
    ct_emb = pd.DataFrame(embed_volumes(ct_enc, ct, batch_size=1), index=ids).add_prefix("ct_ae_")
    frames = {"ct": pd.concat([phen[list(CT_FEATURES)], ct_emb], axis=1).dropna(), "encoders": {"ct": ct_name}}
    has_pet = np.array([r.get("suv_npz") is not None for r in results])
    if has_pet.sum() >= 4:
        pet_ids = [i for i, h in zip(ids, has_pet) if h]
        pet_enc, frames["encoders"]["pet"] = volume_encoder("pet", suv[has_pet], cfg, cfg["seed"] + 1)
        pet_emb = pd.DataFrame(embed_volumes(pet_enc, suv[has_pet], batch_size=1), index=pet_ids).add_prefix("pet_ae_")
        frames["pet"] = pd.concat([phen.loc[pet_ids, list(PET_FEATURES)], pet_emb], axis=1).dropna()
    for k, name in frames["encoders"].items():  # kept in the embeddings' parquet metadata (pandas attrs)
        frames[k].attrs["encoder"] = name
    frames["phenotypes"] = phen
    return frames
