"""A cohort with only the inputs of target evidence: GDC omics, compounds and a few spatial samples.

The same plan (and so the same planted targets and decoys) as ``generate_cohort`` with the same
config, without the CT/PET series and without slides for patients that have no spatial sample:
the cheap way to test the ranking on real file formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flows.store.artifacts import atomic_path
from flows.synthetic.cohort import (DIAGNOSES, CohortConfig, _jsonable, _slide_job, plan_cohort, write_omics,
                                    write_spatial)
from flows.synthetic.interaction import interaction_truth


def generate_evidence_cohort(out: str | Path, config: CohortConfig = CohortConfig(),
                             max_spatial: int | None = None) -> dict[str, Any]:
    """Write omics, compounds and (up to ``max_spatial``) spatial samples with their slides; return the truth."""
    from flows.synthetic.compounds import write_compounds_table

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_cohort(config)
    patients = plan["patients"]
    seeds = np.random.default_rng(config.seed + 1).integers(0, 2**31 - 1, size=(len(patients), 3))
    omics = write_omics(out, plan, np.random.default_rng(config.seed + 2))
    spatial_idx = [i for i in range(len(patients)) if plan["has_spatial"][i]][:max_spatial]
    (out / "slides").mkdir(exist_ok=True)
    (out / "spatial").mkdir(exist_ok=True)
    srng = np.random.default_rng(config.seed + 3)
    slides: dict[str, Any] = {}
    for i in spatial_idx:
        slide = out / "slides" / f"{patients[i]}-01Z-00-DX1.tiff"
        truth = _slide_job((str(slide), int(seeds[i, 1]), float(plan["signals"]["wsi"][i]),
                            config.slide_size_px, config.slide_mpp))
        write_spatial(out, plan, i, slide, truth, srng, config, omics["gene_ids"])
        slides[patients[i]] = truth
    other = [g for g in plan["genes"] if g not in plan["targets"] and g not in plan["drug_decoys"]]
    write_compounds_table(out / "compounds" / "compounds.tsv", target_genes_high=plan["targets"],
                          other_genes=other, seed=config.seed, potent_decoys=plan["drug_decoys"],
                          moderate_genes=plan["moderate_targets"])
    # the catalog comes from the same content scanner users run on their folders (as in generate_cohort)
    from flows.catalog.scan import scan
    from flows.catalog.write import write_scan_catalog

    write_scan_catalog(scan(out), out / "data_catalog.yaml", cohort=f"fusionrx-evidence-seed{config.seed}")
    truth = {"config": plan["config"], "targets": plan["targets"], "decoys": plan["decoys"]["classes"],
             "passenger_of": plan["decoys"]["passenger_of"], "moderate_potency_targets": plan["moderate_targets"],
             "subtype_genes": plan["subtype_genes"], "spatial": [patients[i] for i in spatial_idx],
             "y": {pid: int(v) for pid, v in zip(patients, plan["y"])},
             "signals": {m: dict(zip(patients, map(float, v))) for m, v in plan["signals"].items()},
             "slides": slides}
    if "interaction" in plan:
        truth["interaction"] = interaction_truth(plan, DIAGNOSES, config.interaction_shift)
    with atomic_path(out / "truth.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(truth), indent=1))
    return truth
