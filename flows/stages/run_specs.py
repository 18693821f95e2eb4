"""The run's fusion experiments as experiment specs over its own store: one experiment code path.

``fusionrx run`` writes its diagnosis and survival experiments as specs (``STORE/experiments/run-*.yaml``)
over the embeddings it just wrote and runs them through the same engine as ``fusionrx experiment``
(baseline, every single modality, every strategy, on the same folds). A scientist reruns or edits one
with ``fusionrx experiment STORE/experiments/run-diagnosis.yaml --store STORE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from flows.store.artifacts import atomic_path

SPEC_DIR = "experiments"
DIAGNOSIS_LABEL = "primary_diagnosis"
SURVIVAL_TIME, SURVIVAL_EVENT = "os_time_days", "os_event"


def run_options(cfg: dict) -> dict[str, Any]:
    """Engine options (spec ``options``) from the run config's fusion settings."""
    opts = {"epochs": cfg["fusion_epochs"], "lr": cfg["fusion_lr"], "weight_decay": cfg["fusion_weight_decay"],
            "hidden": cfg["fusion_hidden"], "dropout": cfg["fusion_dropout"],
            "modality_dropout": cfg["modality_dropout"], "embed_dim": cfg["embed_dim"],
            "num_threads": cfg["torch_cpu_threads"], "singles": list(cfg["single_modalities"])}
    # models with slide bags: mini-batches of fusion_batch_size patients, or full batch (None: bags padded to
    # the longest of the cohort's; 1.5x faster than batches of 32 on the 64-patient demo)
    opts["bag_batch_size"] = int(cfg["fusion_batch_size"]) if cfg.get("fusion_batch_size") else None
    opts["best"] = bool(cfg.get("fusion_best", False))
    if cfg.get("fusion_bag_instances"):
        opts["bag_train_instances"] = int(cfg["fusion_bag_instances"])
    return opts


def run_spec_dicts(store: Path, cfg: dict, flat: list[str], bags: list[str],
                   with_survival: bool, with_diagnosis: bool = True) -> dict[str, dict[str, Any]]:
    """{name: spec} of the run's experiments: with ``with_diagnosis`` the diagnosis (every class of
    ``primary_diagnosis``) and, with ``with_survival``, overall survival (Cox head) over the store's modalities."""
    modalities: dict[str, Any] = {m: "*" for m in flat}
    modalities.update({m: {"bags": m} for m in bags})
    common = {"store": str(Path(store).resolve()), "id": "patient_id", "modalities": modalities,
              "folds": int(cfg["cv_splits"]), "repeats": int(cfg["cv_repeats"]), "seed": int(cfg["seed"]),
              "strategies": list(cfg["strategies"]), "options": run_options(cfg)}
    specs = {}
    if with_diagnosis:
        specs["run-diagnosis"] = {"name": "run-diagnosis", **common,
                                  "description": "fusionrx run: diagnosis from every modality of the store",
                                  "task": {"kind": "classification", "label": DIAGNOSIS_LABEL}}
    if with_survival:
        specs["run-survival"] = {"name": "run-survival", **common,
                                 "description": "fusionrx run: overall survival (Cox head)",
                                 "task": {"kind": "survival", "time": SURVIVAL_TIME, "event": SURVIVAL_EVENT,
                                          "heads": ["cox"]},
                                 "options": {**common["options"], "select": list(cfg["survival_select"])}}
    return specs


def write_spec(store: Path, spec: dict[str, Any]) -> Path:
    """``STORE/experiments/<name>.yaml`` (temp file, then rename)."""
    path = Path(store) / SPEC_DIR / f"{spec['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def task_label(spec: dict[str, Any], n_classes: int | None) -> str:
    """The run record's task name of a spec: 'diagnosis (3 classes)' or 'overall survival (cox)'."""
    if spec["task"]["kind"] == "classification":
        return f"diagnosis ({n_classes} classes)"
    return "overall survival (cox)"


def rows_table(rows: list[dict[str, Any]], task: str) -> pd.DataFrame:
    """The engine's rows as the run's experiments table (name, kind, strategy, modalities, metric, mean, std,
    n_folds, task, and for single modalities ``mean_present``: the metric over the patients having that
    modality); published rows (no folds) are left out."""
    out = []
    for r in rows:
        if not r.get("folds"):
            continue
        kind = {"single": "single", "baseline": "baseline", "best": "best"}.get(r["strategy"], "fusion")
        present = r.get("other_metrics", {}).get(f"{r['metric']}_present", float("nan"))
        out.append({"name": r["name"], "kind": kind, "strategy": r["strategy"],
                    "modalities": "+".join(r["modalities"]), "task": task, "metric": r["metric"],
                    "mean": float(r["mean"]), "std": float(r["std"]), "n_folds": len(r["folds"]),
                    "mean_present": float(present)})
    return pd.DataFrame(out, columns=["name", "kind", "strategy", "modalities", "task", "metric", "mean", "std",
                                      "n_folds", "mean_present"])


def no_experiments() -> dict[str, Any]:
    """The fusion stage's output when the run has no experiment to run (no labels, too few patients)."""
    return {"experiments": rows_table([], ""), "oof": {}, "classes": [], "n_patients": 0, "modality_counts": {},
            "specs": [], "experiment_runs": [], "model_evidence": None, "models": {}}


def modality_counts(data) -> dict[str, int]:
    """Patients having each modality (a flat row not all NaN, or a bag)."""
    counts = {m: int(f.notna().any(axis=1).sum()) for m, f in data.features.items()}
    counts.update({m: len(b) for m, b in (getattr(data, "bags", None) or {}).items()})
    return counts


def run_store_experiments(store: Path, cfg: dict, flat: list[str], bags: list[str], with_survival: bool,
                          workers: int = 1, mlflow: bool = True, with_diagnosis: bool = True) -> dict[str, Any]:
    """Write and run the run's specs over ``store``; the experiments table, OOF predictions, classes,
    patient and modality counts, spec paths, experiment run ids and (``deploy_models``) the deployed models
    saved to ``STORE/models/<task>/`` ({task: summary}, flows.stages.deployed_model)."""
    from flows.experiments.runner import run_spec
    from flows.stages.deployed_model import deploy_spec_model

    tables, oof, runs, specs_out, models = [], {}, [], [], {}
    classes, n_patients, counts = [], 0, {}
    for name, spec in run_spec_dicts(store, cfg, flat, bags, with_survival, with_diagnosis).items():
        path = write_spec(store, spec)
        out = run_spec(path, store, mlflow=mlflow, workers=workers)
        if cfg.get("deploy_models", True):
            model = deploy_spec_model(store, path, out)
            if model is not None:
                models[model["task"]] = model
        data = out["data"]
        if spec["task"]["kind"] == "classification" or not counts:
            classes = list(data.classes or [])
            n_patients = len(data.patients)
            counts = modality_counts(data)
        tables.append(rows_table(out["rows"], task_label(spec, len(data.classes or []))))
        oof.update({f"{name}/{r.name}": r.oof for r in out["results"]})
        runs.append(out["run"]["run_id"])
        specs_out.append(str(path))
    return {"experiments": pd.concat(tables, ignore_index=True), "oof": oof, "classes": classes,
            "n_patients": n_patients, "modality_counts": counts, "specs": specs_out, "experiment_runs": runs,
            "models": models}
