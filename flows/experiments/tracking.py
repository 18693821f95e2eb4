"""MLflow logging of an experiment run: one parent run, one nested run per model (per-fold metrics as steps).

Default: a local file store under the STORE (``STORE/mlruns``; MLflow >= 3 keeps that backend in
maintenance mode, so it is allowed explicitly here); any tracking server by URI. MLflow is imported
lazily (several seconds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def default_tracking_uri(store: str | Path) -> str:
    """``file:`` URI of ``STORE/mlruns``."""
    return (Path(store).resolve() / "mlruns").as_uri()


def log_to_mlflow(uri: str, run: dict[str, Any], rows: list[dict[str, Any]], artifacts: list[Path]) -> str:
    """Log the run (params: spec keys, data hashes, code version) and every model row; returns the MLflow run id."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(run["name"])
    with mlflow.start_run(run_name=run["run_id"]) as parent:
        mlflow.set_tags({"fusionrx.run_id": run["run_id"], "code_version": run["code_version"], "task": run["task"]})
        mlflow.log_params({"spec_path": run["spec_path"], "n_patients": run["n_patients"], "n_folds": run["n_folds"]})
        mlflow.log_dict(run["spec"], "spec.json")
        mlflow.log_dict(run["data_sha256"], "data_sha256.json")
        for r in rows:
            if r["strategy"] == "published":
                continue
            with mlflow.start_run(run_name=r["name"], nested=True):
                mlflow.log_params({"strategy": r["strategy"], "modalities": "+".join(r["modalities"]),
                                   "head": r.get("head") or "-"})
                mlflow.log_metrics({f"{r['metric']}_mean": r["mean"], f"{r['metric']}_std": r["std"]})
                for k, v in enumerate(r["folds"]):
                    mlflow.log_metric(r["metric"], v, step=k)
                for k, v in (r.get("other_metrics") or {}).items():
                    if v == v:
                        mlflow.log_metric(f"{k}_mean", v)
        for a in artifacts:
            if Path(a).exists():
                mlflow.log_artifact(str(a))
        return parent.info.run_id
