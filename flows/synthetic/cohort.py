"""Synthetic cohort generator: a TCGA-like cohort in real file formats with a planted, known truth.

The latent model (all driven by one seed):
- each patient has a subtype ``y`` in 0..K-1 (the diagnosis, K = ``n_diagnoses``, 3 by default) and, per
  modality m, a signal ``s_m ~ N((2y - (K - 1)) * signal_shift, 1)`` drawn independently (class means
  -2, 0, +2 shifts apart for K = 3; -1, +1 for K = 2), so each modality carries only part of the subtype
  and a fused model should beat every single modality;
- ``s_ct`` sets the CT tumour radius, ``s_pet`` the tumour SUV, ``s_wsi`` the nuclear density of the
  slide's tumour region, ``s_expression`` the expression of the subtype genes in the tumour sample,
  ``s_spatial`` the same genes in the tumour spots of the spatial sample;
- a few planted target genes are over-expressed in tumour vs normal, amplified, high in the tumour
  region of the spatial samples, drive survival risk and have potent compounds; decoys carry only one
  of those kinds of evidence.
``signal="interaction"`` (two diagnoses) plants part of the diagnosis in a PET x expression interaction
instead (``flows.synthetic.interaction``): only a fusion that combines modalities non-additively reads it.
The truth goes to ``truth.json``, which the pipeline never reads.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.store.artifacts import atomic_path
from flows.synthetic.decoys import (OVER_EXPRESSED_SHIFT, add_copy_number, add_spatial_tumour_expression,
                                    add_tumour_expression, arm, cytobands_for, mutated_long_genes,
                                    plant_decoys)
from flows.synthetic.interaction import check_signal, interaction_truth, plant_interaction

DIAGNOSES = ("Adenocarcinoma, NOS", "Squamous cell carcinoma, NOS", "Large cell carcinoma, NOS")
MODALITY_SIGNALS = ("ct", "pet", "wsi", "expression", "spatial")
EXTRA_GENES = ("TP53", "KRAS", "PTEN", "RB1", "STK11", "KEAP1", "NF1", "CDKN2A", "SMAD4", "COL1A1",
               "COL1A2", "COL3A1", "ACTA2", "VIM", "FAP", "PDGFRB", "DCN", "LUM", "POSTN", "SPARC")
GDC_DOWNLOAD_DIR = "gdc_download"
SAMPLE_SHEET_NAME = "gdc_sample_sheet.2024-01-15.tsv"
CLINICAL_PATH = "clinical.cart.2024-01-15/clinical.tsv"
STROMA_GENES = ("COL1A1", "COL1A2", "COL3A1", "ACTA2", "VIM", "FAP", "PDGFRB", "DCN", "LUM", "POSTN")


@dataclass(frozen=True)
class CohortConfig:
    """Parameters of the synthetic cohort; every field is recorded in truth.json."""

    n_patients: int = 60
    seed: int = 0
    signal_shift: float = 0.7
    n_diagnoses: int = 3             # subtypes (DIAGNOSES[:n_diagnoses]); 2 gives the former binary cohort
    n_targets: int = 4
    n_de_decoys: int = 6
    n_subtype_genes: int = 20
    frac_pet: float = 0.8
    frac_slide: float = 0.85
    frac_spatial: float = 0.4
    frac_pet_gml: float = 0.15       # PET written as GE GML (already SUVbw)
    frac_pet_philips: float = 0.15   # PET written as Philips CNTS with the private SUV scale factor
    frac_spaceranger: float = 0.3    # spatial samples written as Space Ranger folders (rest: h5ad)
    frac_normal: float = 0.35
    slide_size_px: int = 2048
    slide_mpp: float = 0.5
    spot_pitch_px: int = 96
    workers: int = 2
    # "linear": every modality's signal shifts with the diagnosis; "interaction" (n_diagnoses 2): the diagnosis
    # is expression subtype XOR PET phenotype, each apart by 2 * interaction_shift SD (CT, slides stay linear)
    signal: str = "linear"
    interaction_shift: float = 1.5


def patient_ids(n: int) -> list[str]:
    """TCGA-style patient barcodes (12 characters)."""
    return [f"TCGA-FX-{i:04d}" for i in range(1, n + 1)]


def gene_universe() -> list[str]:
    """Gene symbols of the cohort: scanpy's bundled PBMC panel, the candidate targets and extras."""
    import scanpy as sc

    from flows.synthetic.compounds import CANDIDATE_TARGETS

    from flows.synthetic.decoys import DECOY_GENES

    genes = list(dict.fromkeys(list(sc.datasets.pbmc68k_reduced().var_names)
                               + list(CANDIDATE_TARGETS) + list(EXTRA_GENES) + list(DECOY_GENES)))
    return genes


def _nb_counts(rng: np.random.Generator, mean: np.ndarray, dispersion: float = 0.1) -> np.ndarray:
    """Negative-binomial counts with the given means (gamma-Poisson), vectorised."""
    shape = 1.0 / dispersion
    lam = rng.gamma(shape, mean / shape)
    return rng.poisson(lam).astype(np.int64)


# ----------------------------------------------------------------------------------------- latent
def plan_cohort(config: CohortConfig) -> dict[str, Any]:
    """Draw the latent truth of the cohort (no files written)."""
    from flows.synthetic.compounds import CANDIDATE_TARGETS

    rng = np.random.default_rng(config.seed)
    patients = patient_ids(config.n_patients)
    n = len(patients)
    k = config.n_diagnoses
    if not 2 <= k <= len(DIAGNOSES):
        raise ValueError(f"CohortConfig.n_diagnoses: expected 2..{len(DIAGNOSES)}, found {k}")
    check_signal(config.signal, k)
    y = rng.permutation(np.arange(n) % k)
    signals = {m: (2 * y - (k - 1)) * config.signal_shift + rng.normal(size=n) for m in MODALITY_SIGNALS}
    genes = gene_universe()
    candidates = list(CANDIDATE_TARGETS)
    targets = sorted(rng.choice(candidates, size=config.n_targets, replace=False).tolist())
    drug_decoys = [g for g in candidates if g not in targets]
    from flows.synthetic.decoys import DECOY_GENES

    plain = [g for g in genes if g not in candidates and g not in EXTRA_GENES and g not in DECOY_GENES]
    picked = rng.choice(plain, size=config.n_de_decoys + config.n_subtype_genes, replace=False).tolist()
    de_decoys = sorted(picked[: config.n_de_decoys])
    subtype_genes = sorted(picked[config.n_de_decoys:])
    has_pet = rng.random(n) < config.frac_pet
    has_slide = rng.random(n) < config.frac_slide
    has_spatial = has_slide & (rng.random(n) < config.frac_spatial / max(config.frac_slide, 1e-9))
    has_normal = rng.random(n) < config.frac_normal
    target_activity = rng.normal(size=n)
    amplified = rng.random((n, len(targets))) < 0.45
    # survival: risk from the targets' activity and amplification (not from the subtype)
    log_hazard = 0.8 * target_activity + 0.4 * amplified.sum(1) - 0.3 * y
    event_time = rng.exponential(900.0 * np.exp(-log_hazard))
    censor_time = rng.uniform(200.0, 3000.0, size=n)
    plan = {
        "config": asdict(config), "patients": patients, "y": y, "signals": signals, "genes": genes,
        "targets": targets, "drug_decoys": drug_decoys, "de_decoys": de_decoys,
        "subtype_genes": subtype_genes, "has_pet": has_pet, "has_slide": has_slide,
        "has_spatial": has_spatial, "has_normal": has_normal, "target_activity": target_activity,
        "amplified": amplified, "event_time": event_time, "censor_time": censor_time,
        "base_log_mean": rng.normal(np.log(40.0), 1.3, size=len(genes)),
    }
    plan = plant_decoys(plan, config.seed, candidates)
    if config.signal == "interaction":  # own generator: every draw above is the linear cohort's
        plan = plant_interaction(plan, config.seed, config.interaction_shift)
    return plan


# ------------------------------------------------------------------------------------ per patient
IMAGING_COLLECTION = "FUSIONRX-LUNG-PETCT"  # TCIA-style collection folder under imaging/


def _imaging_job(args: tuple) -> dict[str, Any]:
    """Write one patient's CT (and PET) series and the tumour's RTSTRUCT in the TCIA download layout
    (collection/patient/study/series/1-001.dcm); runs in a worker process."""
    from flows.synthetic import dicom_writer as dw
    from flows.synthetic import rtstruct_writer as rw
    from flows.synthetic.identity import fake_identity

    out, pid, seed, s_ct, s_pet, with_pet, pet_units = args
    rng = np.random.default_rng(seed)
    identity = fake_identity(pid, seed)  # made-up name, birth date, address ... in every header of the patient
    radius_mm = float(np.clip(11.0 + 3.0 * s_ct, 4.0, 18.0))
    centre_mm = dw.lung_tumour_centre_mm(rng, dw.ct_geometry(), radius_mm)
    study = rw.tcia_study_dir(Path(out) / "imaging" / IMAGING_COLLECTION, pid, dw.STUDY_DATE, "PET CT CHEST",
                              dw.study_uid_for(pid))
    ct_uid = dw.ct_series_uid(pid, seed)
    ct = dw.write_ct_series(rw.tcia_series_dir(study, 2, "CT CHEST", ct_uid), patient_id=pid,
                            tumour_centre_mm=centre_mm, tumour_radius_mm=radius_mm, seed=seed, naming="tcia",
                            identity=identity)
    truth = {"tumour_radius_mm": radius_mm, "tumour_centre_mm": list(map(float, centre_mm)), "ct": ct}
    slice_z = ct["origin_mm"][2] + np.arange(ct["shape"][0]) * ct["slice_thickness_mm"]
    truth["rtstruct"] = rw.write_sphere_rtstruct(
        rw.tcia_series_dir(study, 4, "RTSTRUCT", rw.rtstruct_series_uid(pid, ct_uid)) / "1-1.dcm",
        patient_id=pid, study_uid=ct["study_uid"], frame_of_reference_uid=ct["frame_of_reference_uid"],
        ct_series_uid=ct_uid, ct_slice_uids=[dw.ct_slice_uid(pid, seed, k) for k in range(ct["shape"][0])],
        slice_z_mm=slice_z, centre_mm=centre_mm, radius_mm=radius_mm, identity=identity)
    if with_pet:
        suv = float(np.clip(6.0 + 2.0 * s_pet, 2.5, 14.0))
        pet = dw.write_pet_series(rw.tcia_series_dir(study, 3, "PET AC", dw.pet_series_uid(pid, seed + 1)),
                                  patient_id=pid,
                                  tumour_centre_mm=centre_mm, tumour_radius_mm=radius_mm, tumour_suv=suv,
                                  weight_kg=float(rng.uniform(50, 95)), dose_bq=float(rng.uniform(250e6, 400e6)),
                                  injection_to_scan_s=float(rng.uniform(3300, 4200)), seed=seed + 1,
                                  frame_of_reference_uid=ct["frame_of_reference_uid"],
                                  study_uid=ct["study_uid"], units=pet_units, naming="tcia", identity=identity)
        truth.update({"tumour_suv": suv, "pet": pet})
    return _jsonable(truth)


def _slide_job(args: tuple) -> dict[str, Any]:
    """Write one patient's whole-slide image; runs in a worker process."""
    from flows.synthetic.slide_writer import write_synthetic_slide

    path, seed, s_wsi, size, mpp = args
    rng = np.random.default_rng(seed)
    rx, ry = rng.uniform(0.36, 0.44) * size, rng.uniform(0.32, 0.42) * size
    cx, cy = size / 2 + rng.uniform(-0.04, 0.04) * size, size / 2 + rng.uniform(-0.04, 0.04) * size
    r = rng.uniform(0.14, 0.18) * size
    ang = rng.uniform(0, 2 * np.pi)
    tx, ty = cx + 0.35 * rx * np.cos(ang), cy + 0.35 * ry * np.sin(ang)
    density = float(np.clip(6.0 * (1.0 + 0.3 * s_wsi), 1.5, 12.0))
    truth = write_synthetic_slide(path, size_px=(size, size), mpp=mpp, tissue_ellipse=(cx, cy, rx, ry),
                                  tumour_circle=(tx, ty, r), nuclear_density=density,
                                  nuclear_radius_px=4.0, seed=seed)
    truth = dict(truth)
    truth.update({"tissue_ellipse": [cx, cy, rx, ry], "tumour_circle": [tx, ty, r], "nuclear_density": density})
    return _jsonable(truth)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------------------ omics
def _tumour_log_means(plan: dict[str, Any]) -> np.ndarray:
    """Per tumour sample, per gene, the log mean expression (patients x genes)."""
    genes = plan["genes"]
    gi = {g: i for i, g in enumerate(genes)}
    n = len(plan["patients"])
    mu = np.tile(plan["normal_log_mean"], (n, 1))
    for k, g in enumerate(plan["targets"]):
        mu[:, gi[g]] += 1.4 + 0.5 * plan["target_activity"] + 0.6 * plan["amplified"][:, k]
    for g in plan["de_decoys"]:
        mu[:, gi[g]] += OVER_EXPRESSED_SHIFT
    for g in plan["subtype_genes"]:
        mu[:, gi[g]] += 0.5 * plan["signals"]["expression"]
    add_tumour_expression(mu, genes, plan["decoys"])
    return mu


def write_omics(out: Path, plan: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Write GDC-style STAR counts + sample sheet, MAF, copy number and clinical tables."""
    from flows.synthetic import gdc_writer as gw

    genes, patients = plan["genes"], plan["patients"]
    n_genes = len(genes)
    gene_ids = [f"ENSG{900000 + i:011d}.1" for i in range(n_genes)]
    gene_types = ["protein_coding"] * n_genes
    expr_dir = out / "omics" / GDC_DOWNLOAD_DIR  # one gdc-client download: <File ID>/<File Name>
    uuid_rng = np.random.default_rng([int(plan["config"]["seed"]), 17])  # file UUIDs of MAF / CN files
    expr_dir.mkdir(parents=True, exist_ok=True)
    tumour_mu = _tumour_log_means(plan)
    rows = []

    def _one_sample(pid: str, code: str, log_mu: np.ndarray) -> None:
        p = np.exp(log_mu)
        lib = rng.uniform(1.5e6, 3.0e6)
        counts = _nb_counts(rng, lib * p / p.sum())
        uuid = gw.new_file_uuid(rng)
        fname = f"{uuid}.rna_seq.augmented_star_gene_counts.tsv"
        gw.write_star_counts(gw.download_path(expr_dir, uuid, fname), gene_ids, genes, gene_types, counts)
        rows.append(gw.sheet_row(uuid, fname, "Transcriptome Profiling", "Gene Expression Quantification", pid,
                                 [f"{pid}-{code}"]))

    for i, pid in enumerate(patients):
        _one_sample(pid, "01A", tumour_mu[i])
        if plan["has_normal"][i]:
            _one_sample(pid, "11A", plan["normal_log_mean"])

    # copy number (GISTIC thresholded by gene): targets amplified, sparse noise elsewhere
    aliquots = [f"{pid}-01A-11D-A{i:03d}-01" for i, pid in enumerate(patients)]
    cn = np.zeros((n_genes, len(patients)), dtype=int)
    noise = rng.random(cn.shape)
    cn[noise < 0.02] = -1
    cn[(noise >= 0.02) & (noise < 0.04)] = 1
    gi = {g: i for i, g in enumerate(genes)}
    for g in plan["de_decoys"]:
        cn[gi[g]] = 0
    for k, g in enumerate(plan["targets"]):
        amp = plan["amplified"][:, k]
        cn[gi[g]] = np.where(amp, np.where(rng.random(len(patients)) < 0.3, 2, 1), 0)
    add_copy_number(cn, genes, plan["targets"], plan["decoys"])
    cn_table = pd.DataFrame(cn, index=genes, columns=aliquots)
    # chromosomes from the genes' real cytobands (co-amplified passengers sit on their target's arm)
    chroms = ["chr" + arm(b).rstrip("pq") for b in cytobands_for(genes)]
    rows += gw.write_gene_level_cn_download(expr_dir, cn_table, gene_ids, uuid_rng, chroms)

    # mutations: passengers everywhere, TP53 frequent, targets at hotspot-like rates
    maf_rows = []
    classes = np.array(["Missense_Mutation", "Silent", "Nonsense_Mutation", "Frame_Shift_Del"])
    for i, pid in enumerate(patients):
        mutated = list(rng.choice(genes, size=rng.poisson(12), replace=False))
        if rng.random() < 0.5:
            mutated.append("TP53")
        mutated += [g for g in plan["targets"] if rng.random() < 0.12]
        mutated += [g for g in mutated_long_genes(rng, plan["decoys"]) if g not in mutated]
        for g in mutated:
            vc = classes[rng.choice(4, p=[0.6, 0.25, 0.08, 0.07])]
            pos = int(1_000_000 + rng.integers(0, 5_000_000))
            ref, alt = rng.choice(list("ACGT"), size=2, replace=False)
            maf_rows.append({"Hugo_Symbol": g, "Chromosome": f"chr{1 + gi[g] % 22}", "Start_Position": pos,
                             "End_Position": pos, "Variant_Classification": vc, "Variant_Type": "SNP",
                             "Reference_Allele": ref, "Tumor_Seq_Allele2": alt,
                             "Tumor_Sample_Barcode": f"{pid}-01A-11D-A{i:03d}-08",
                             "Matched_Norm_Sample_Barcode": f"{pid}-10A-01D-A{i:03d}-08",
                             "HGVSp_Short": f"p.X{int(rng.integers(1, 900))}X"})
    rows += gw.write_aliquot_mafs(expr_dir, pd.DataFrame(maf_rows), uuid_rng)
    gw.write_sample_sheet(out / "omics" / SAMPLE_SHEET_NAME, rows)

    # clinical
    dead = plan["event_time"] < plan["censor_time"]
    clin = pd.DataFrame({
        "case_submitter_id": patients,
        "project_id": "TCGA-FXRX",
        "vital_status": np.where(dead, "Dead", "Alive"),
        "days_to_death": np.where(dead, np.round(plan["event_time"]).astype(int).astype(str), "'--"),
        "days_to_last_follow_up": np.where(dead, "'--", np.round(plan["censor_time"]).astype(int).astype(str)),
        "primary_diagnosis": [DIAGNOSES[v] for v in plan["y"]],
        "age_at_index": rng.integers(40, 85, size=len(patients)),
        "gender": rng.choice(["male", "female"], size=len(patients)),
    })
    gw.write_clinical(out / "omics" / CLINICAL_PATH, clin)
    return {"gene_ids": gene_ids}


def write_spatial(out: Path, plan: dict[str, Any], i: int, slide_path: Path, slide_truth: dict,
                  rng: np.random.Generator, config: CohortConfig, gene_ids: list[str],
                  spaceranger: bool = False) -> int:
    """Write a Visium sample on the patient's slide coordinates, as an h5ad or (``spaceranger``) a Space
    Ranger 'outs' folder whose full-resolution image is the slide's level 0; returns the number of spots."""
    import openslide

    from flows.synthetic.spatial_writer import hex_spot_grid, write_visium_h5ad

    genes = plan["genes"]
    gi = {g: k for k, g in enumerate(genes)}
    cx, cy, rx, ry = slide_truth["tissue_ellipse"]
    tx, ty, tr = slide_truth["tumour_circle"]
    coords, arow, acol = hex_spot_grid((cx - rx, cy - ry, cx + rx, cy + ry), config.spot_pitch_px)
    inside = ((coords[:, 0] - cx) / rx) ** 2 + ((coords[:, 1] - cy) / ry) ** 2 <= 1.0
    coords, arow, acol = coords[inside], arow[inside], acol[inside]
    tumour = (coords[:, 0] - tx) ** 2 + (coords[:, 1] - ty) ** 2 <= tr ** 2
    mu = np.tile(plan["base_log_mean"] - 1.5, (len(coords), 1))
    for g in plan["targets"]:
        mu[tumour, gi[g]] += 1.6
    for g in plan["subtype_genes"]:
        mu[tumour, gi[g]] += 0.5 * plan["signals"]["spatial"][i]
    for g in STROMA_GENES:
        if g in gi:
            mu[~tumour, gi[g]] += 1.5
    add_spatial_tumour_expression(mu, tumour, genes, plan["decoys"])
    lib = rng.uniform(3000, 8000, size=(len(coords), 1))
    p = np.exp(mu)
    counts = _nb_counts(rng, lib * p / p.sum(1, keepdims=True))
    with openslide.OpenSlide(str(slide_path)) as slide:
        level = slide.level_count - 1
        w, h = slide.level_dimensions[level]
        hires = np.asarray(slide.read_region((0, 0), level, (w, h)).convert("RGB"))
        scalef = w / slide.dimensions[0]
    pid = plan["patients"][i]
    if spaceranger:
        from flows.synthetic.spatial_writer import write_spaceranger_folder

        write_spaceranger_folder(out / "spatial" / f"{pid}-01A-visium" / "outs", counts=counts, gene_names=genes,
                                 gene_ids=gene_ids, pixel_coords_fullres=coords, array_row=arow, array_col=acol,
                                 hires_image=hires, tissue_hires_scalef=float(scalef),
                                 spot_diameter_fullres=0.55 * config.spot_pitch_px)
        return int(len(coords))
    write_visium_h5ad(out / "spatial" / f"{pid}.h5ad", counts=counts, gene_names=genes, gene_ids=gene_ids,
                      pixel_coords_level0=coords, array_row=arow, array_col=acol, hires_image=hires,
                      tissue_hires_scalef=float(scalef), spot_diameter_fullres=0.55 * config.spot_pitch_px,
                      library_id=f"{pid}-01A-visium", patient_id=pid)
    return int(len(coords))


# ------------------------------------------------------------------------------------------- main
def generate_cohort(out: str | Path, config: CohortConfig = CohortConfig(), progress=print) -> dict[str, Any]:
    """Write the whole synthetic cohort under ``out``; return the truth (also in ``out/truth.json``)."""
    from flows.synthetic.compounds import write_compounds_table

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_cohort(config)
    patients = plan["patients"]
    rng = np.random.default_rng(config.seed + 1)
    seeds = rng.integers(0, 2**31 - 1, size=(len(patients), 3))

    progress(f"[demo-data] {len(patients)} patients -> {out}")
    layout_rng = np.random.default_rng(config.seed + 7)  # vendor / layout choices; the planted truth is untouched
    pet_units = layout_rng.choice(["BQML", "GML", "CNTS"], size=len(patients), p=[
        1.0 - config.frac_pet_gml - config.frac_pet_philips, config.frac_pet_gml, config.frac_pet_philips])
    img_jobs = [(str(out), pid, int(seeds[i, 0]), float(plan["signals"]["ct"][i]), float(plan["signals"]["pet"][i]),
                 bool(plan["has_pet"][i]), str(pet_units[i])) for i, pid in enumerate(patients)]
    slide_idx = [i for i in range(len(patients)) if plan["has_slide"][i]]
    (out / "slides").mkdir(parents=True, exist_ok=True)
    slide_paths = {i: out / "slides" / f"{patients[i]}-01Z-00-DX1.tiff" for i in slide_idx}
    slide_jobs = [(str(slide_paths[i]), int(seeds[i, 1]), float(plan["signals"]["wsi"][i]),
                   config.slide_size_px, config.slide_mpp) for i in slide_idx]
    workers = max(1, min(config.workers, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        imaging_truth = dict(zip(patients, pool.map(_imaging_job, img_jobs)))
        progress(f"[demo-data] CT/PET DICOM series written ({len(patients)} CT, {int(plan['has_pet'].sum())} PET)")
        slide_truth = dict(zip(slide_idx, pool.map(_slide_job, slide_jobs)))
        progress(f"[demo-data] {len(slide_idx)} whole-slide images written")

    omics = write_omics(out, plan, np.random.default_rng(config.seed + 2))
    progress("[demo-data] GDC expression/MAF/copy-number/clinical written")
    (out / "spatial").mkdir(parents=True, exist_ok=True)
    srng = np.random.default_rng(config.seed + 3)
    spatial_idx = [i for i in range(len(patients)) if plan["has_spatial"][i]]
    as_spaceranger = dict(zip(spatial_idx, layout_rng.random(len(spatial_idx)) < config.frac_spaceranger))
    n_spots = {patients[i]: write_spatial(out, plan, i, slide_paths[i], slide_truth[i], srng, config,
                                          omics["gene_ids"], spaceranger=bool(as_spaceranger[i]))
               for i in spatial_idx}
    progress(f"[demo-data] {len(n_spots)} spatial samples written")
    (out / "compounds").mkdir(parents=True, exist_ok=True)
    other = [g for g in plan["genes"] if g not in plan["targets"] and g not in plan["drug_decoys"]]
    write_compounds_table(out / "compounds" / "compounds.tsv", target_genes_high=plan["targets"],
                          other_genes=other, seed=config.seed, potent_decoys=plan["drug_decoys"],
                          moderate_genes=plan["moderate_targets"])

    # the catalog comes from the same content scanner users run on their own folders
    from flows.catalog.scan import scan
    from flows.catalog.write import write_scan_catalog

    scanned = scan(out)
    _, notes = write_scan_catalog(scanned, out / "data_catalog.yaml", cohort=f"fusionrx-demo-seed{config.seed}")
    for note in scanned["problems"] + notes:
        progress(f"[demo-data] scan: {note['path']}: {note['error']}")

    truth = {
        "config": plan["config"],
        "targets": plan["targets"],
        "drug_decoys": plan["drug_decoys"],
        "de_decoys": plan["de_decoys"],
        "decoys": plan["decoys"]["classes"],
        "passenger_of": plan["decoys"]["passenger_of"],
        "moderate_potency_targets": plan["moderate_targets"],
        "subtype_genes": plan["subtype_genes"],
        "diagnoses": list(DIAGNOSES[: config.n_diagnoses]),
        "subtype": {pid: DIAGNOSES[int(plan["y"][i])] for i, pid in enumerate(patients)},
        "signals": {m: dict(zip(patients, map(float, v))) for m, v in plan["signals"].items()},
        "modalities_present": {
            "pet": [p for p, h in zip(patients, plan["has_pet"]) if h],
            "wsi": [p for p, h in zip(patients, plan["has_slide"]) if h],
            "spatial": list(n_spots),
            "normal_rna": [p for p, h in zip(patients, plan["has_normal"]) if h],
        },
        "imaging": imaging_truth,
        "slides": {patients[i]: t for i, t in slide_truth.items()},
        "spatial_spots": n_spots,
        "layouts": {"pet_units": {p: str(pet_units[i]) for i, p in enumerate(patients) if plan["has_pet"][i]},
                    "spaceranger": sorted(patients[i] for i, v in as_spaceranger.items() if v),
                    "imaging_collection": f"imaging/{IMAGING_COLLECTION}"},
    }
    if "interaction" in plan:
        truth["interaction"] = interaction_truth(plan, DIAGNOSES, config.interaction_shift)
    with atomic_path(out / "truth.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(truth), indent=1))
    progress(f"[demo-data] done: catalog {out / 'data_catalog.yaml'}, truth {out / 'truth.json'}")
    return truth
