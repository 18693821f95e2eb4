"""Run a spec end to end: load inputs, run the engine, record in the results DB and MLflow, write the report."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from flows.experiments.inputs import load_experiment
from flows.experiments.reference import read_reference
from flows.experiments.spec import ExperimentSpec, load_spec
from flows.store.isolate import forked_workers
from fusion.experiment import ExperimentOptions, ModelResult, run_experiment
from fusion.experiment_pool import worker_context


def code_version() -> str:
    """Git commit of the project (with '-dirty' for uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "fusionrx " + version("fusionrx")
        except PackageNotFoundError:
            return "unknown"


def reference_rows(spec: ExperimentSpec) -> list[dict]:
    """Published rows for the spec's ``reference`` (cohort from ``reference_cohort`` or the splits folder)."""
    if spec.reference is None:
        return []
    cohort = spec.reference_cohort
    if cohort is None and spec.splits is not None:
        cohort = spec.splits.name.removeprefix("tcga_")
    if cohort is None:
        raise spec.fail("reference_cohort", "needed to pick the published rows (e.g. 'blca')")
    return read_reference(spec.reference, cohort)


def run_spec(spec_path: str | Path, store: str | Path, *, tracking_uri: str | None = None, mlflow: bool = True,
             report: str | Path | None = None, options: ExperimentOptions | None = None,
             progress: Callable[[str], None] | None = None, workers: int = 1) -> dict[str, Any]:
    """Run every model of the spec; returns {'rows', 'results', 'run', 'report', 'mlflow_run_id', 'data'}.

    Rows: ours (one per model) then the published ones. Recorded in ``STORE/results.duckdb``
    (experiment_runs / experiment_results), MLflow (``tracking_uri``, default ``STORE/mlruns``) and
    the HTML report (default ``STORE/reports/<name>-<run_id>.html``).
    """
    from flows.experiments.report import write_report
    from flows.experiments.tracking import default_tracking_uri, log_to_mlflow
    from flows.results.db import write_experiment_run

    spec = load_spec(spec_path)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    data, splits, hashes = load_experiment(spec)
    refs = reference_rows(spec)
    opts = options or spec.experiment_options()
    if data.bags and opts.encoder_factories is None:
        from dataclasses import replace

        from flows.experiments.bags import mil_encoder_factories

        opts = replace(opts, encoder_factories=mil_encoder_factories(data.bags, opts.embed_dim))
    with worker_context(forked_workers):  # pool workers fork from the fork server, with torch imported there
        results: list[ModelResult] = run_experiment(data, splits, opts, progress=progress, workers=workers)
    rows = [r.row() for r in results] + refs
    run_id = f"{spec.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    uri = tracking_uri or spec.tracking_uri or default_tracking_uri(store)
    run = {"run_id": run_id, "name": spec.name, "task": data.task, "started_utc": started,
           "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "spec_path": str(spec.path),
           "spec": spec.raw, "data_sha256": hashes, "code_version": code_version(), "n_patients": len(data.patients),
           "n_folds": len(splits), "tracking_uri": uri if mlflow else None, "wall_s": time.perf_counter() - t0}
    report_path = Path(report) if report else Path(store) / "reports" / f"{run_id}.html"
    write_report(report_path, f"{spec.name} ({data.task})", results, refs, data, run)
    run["report_path"] = str(report_path)
    mlflow_id = log_to_mlflow(uri, run, rows, [report_path]) if mlflow else None
    write_experiment_run(store, run, rows)
    return {"rows": rows, "results": results, "run": run, "report": report_path, "mlflow_run_id": mlflow_id,
            "data": data}
