"""A new patient in seconds: the time from one patient's CT/PET folder (not in the cohort) to the deployed
model's prediction and report, per stage (`fusionrx report --new`), cold (first call in a process) and warm
(the store kept in memory, as the API keeps it). Issue 16's goal: <= 3 s for a CT/PET-only patient once read.

Usage (from the project root): OMP_NUM_THREADS=1 python bench/new_patient.py [--patients 24] [--seed 3]
    [--threads 1] [--work DIR] [--out bench/new_patient.json]
Generates a cohort, holds one patient's imaging folder out, runs the pipeline on the rest (a Prefect server
starts for it), then reports on the held-out patient's CT/PET folder, on the same folder with its slide, and
with its slide and Visium sample (spatial section and features from the store's spatial reference).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

RUN_CONFIG = "fusion_epochs: 30\ncv_splits: 3\nstrategies: [early, late]\nsurvival_experiments: false\n" \
             "single_modalities: [ct, pet, wsi, expression]\nfusion_best: true\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the reporting process")
    ap.add_argument("--work", default=None, help="folder to keep the cohort and store in (default: a temp dir)")
    ap.add_argument("--out", default="bench/new_patient.json")
    args = ap.parse_args()
    from flows.console import quiet_prefect_env

    quiet_prefect_env()  # before Prefect is imported: no telemetry, no per-task log lines
    import torch

    torch.set_num_threads(args.threads)
    from flows.catalog.scan import scan
    from flows.catalog.write import write_scan_catalog
    from flows.patients.build import PatientStore
    from flows.patients.new_patient import new_patient_report
    from flows.pipeline import run_pipeline
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    data, store, new = work / "data", work / "store", work / "new"
    if not (store / "models").exists():
        truth = generate_cohort(data, CohortConfig(n_patients=args.patients, seed=args.seed), progress=lambda m: None)
        slides = {p.name[:12]: p for p in (data / "slides").glob("*.tiff")}
        pid = next(p for p in sorted(truth["imaging"]) if "pet" in truth["imaging"][p] and p in slides)
        (new / "ctpet").mkdir(parents=True, exist_ok=True)
        for folder in (data / "imaging").glob(f"*/{pid}"):  # TCIA layout: collection/patient/...
            shutil.move(str(folder), new / "ctpet" / pid)
        shutil.copytree(new / "ctpet", new / "with_slide")
        shutil.move(str(slides[pid]), new / "with_slide" / pid / slides[pid].name)
        shutil.copytree(new / "with_slide", new / "with_spatial")
        for spatial in (data / "spatial").glob(f"{pid}*"):  # the Visium sample goes with the third variant only
            shutil.move(str(spatial), new / "with_spatial" / pid / spatial.name)
        write_scan_catalog(scan(data), data / "data_catalog.yaml", cohort="new-patient-bench")
        (work / "run.yaml").write_text(RUN_CONFIG)
        t0 = time.perf_counter()
        run_pipeline(data / "data_catalog.yaml", store, config_path=work / "run.yaml", verbosity="quiet")
        print(f"cohort run ({args.patients - 1} patients): {time.perf_counter() - t0:.1f} s")
    rows = {}
    kept = PatientStore(store)
    for label in ("ctpet", "with_slide", "with_spatial"):
        if not (new / label).is_dir():  # a --work folder from before the spatial variant
            continue
        folder = next((new / label).iterdir())
        for mode in ("cold", "warm", "warm2"):
            t0 = time.perf_counter()
            r = new_patient_report(folder, store if mode == "cold" else kept, patient_id="NEW-0001")
            rows[f"{label}/{mode}"] = {**{k: round(v, 3) for k, v in r.timings.items()},
                                       "after_read": round(r.after_read_s(), 3),
                                       "total": round(time.perf_counter() - t0, 3),
                                       "predicted": r.report["diagnosis"]["predicted"],
                                       "spatial_features": "spatial" in r.report["new_patient"]["features"]}
            print(f"{label:10s} {mode:5s} after read {r.after_read_s():6.3f} s, total "
                  f"{rows[f'{label}/{mode}']['total']:6.3f} s  " + ", ".join(f"{k} {v:.3f}" for k, v in r.timings.items()))
    out = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "torch_threads": args.threads},
           "patients": args.patients, "seed": args.seed, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
