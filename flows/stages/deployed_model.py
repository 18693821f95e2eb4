"""Stage: the run's deployable models, after its experiments: per task (diagnosis, survival) the configuration
the experiment's ``best`` selection chose, refit on every labelled patient, calibrated on the out-of-fold
predictions and saved to ``STORE/models/<task>/`` (model.pt + model.json, atomically) for patient reports.

One fit per task (seconds): the experiment's data and results are reused, nothing is read again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flows.experiments.spec import load_spec
from fusion.deploy import TASK_OF_KIND, fit_deployed, save_deployed
from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment import ExperimentData, ExperimentOptions

MODELS_DIR = "models"


def spec_options(spec_path: str | Path, data: ExperimentData) -> ExperimentOptions:
    """The engine options ``flows.experiments.runner.run_spec`` ran the spec with (MIL encoders for bags)."""
    opts = load_spec(spec_path).experiment_options()
    if data.bags and opts.encoder_factories is None:
        from flows.experiments.bags import mil_encoder_factories

        opts = replace(opts, encoder_factories=mil_encoder_factories(data.bags, opts.embed_dim))
    return opts


def deploy_spec_model(store: str | Path, spec_path: str | Path, out: dict[str, Any]) -> dict[str, Any] | None:
    """Fit and save the deployed model of one experiment run (``out``: what run_spec returned: data, results,
    run); None for a task that has no deployed model (regression).

    Returns a summary {task, version, path, row, strategy, modalities, head, temperature, ece_before,
    ece_after, ece_after_crossfit, reason, n_train, wall_s}. A model that cannot be fitted (no neural row,
    covariates, too few patients) is reported as {task, skipped: why}; the run goes on.
    """
    data = out["data"]
    if data.task not in TASK_OF_KIND:
        return None
    task = TASK_OF_KIND[data.task]
    t0 = time.perf_counter()
    run = out.get("run") or {}
    try:
        opts = out.get("options") or spec_options(spec_path, data)
        dm = fit_deployed(data, out["results"], opts, run_id=str(run.get("run_id", "")),
                          code_version=str(run.get("code_version", "")), input_hashes=run.get("data_sha256"))
    except (FusionDataError, FusionConfigError) as exc:
        return {"task": task, "skipped": f"deployed {task} model not fitted: {exc}"}
    folder = save_deployed(dm, Path(store) / MODELS_DIR / task)
    cal = dm.info.get("calibration") or {}
    return {"task": task, "version": dm.version, "path": str(folder), "row": dm.chosen_by.get("row"),
            "strategy": dm.strategy, "modalities": dm.modalities, "head": dm.head, "temperature": dm.temperature,
            "ece_before": cal.get("ece_before"), "ece_after": cal.get("ece_after"),
            "ece_after_crossfit": cal.get("ece_after_crossfit"), "reason": dm.chosen_by.get("reason"),
            "n_train": dm.n_train, "wall_s": time.perf_counter() - t0}


def deployed_lines(models: dict[str, dict[str, Any]]) -> list[str]:
    """One console / report line per task: the deployed model and why, or why none was saved."""
    lines = []
    for task, m in sorted(models.items()):
        if "skipped" in m:
            lines.append(m["skipped"])
            continue
        ece = (f", ECE {m['ece_before']:.3f} -> {m['ece_after_crossfit']:.3f} (T={m['temperature']:.2f})"
               if m.get("ece_after_crossfit") is not None else "")
        lines.append(f"deployed {task} model {m['version']}: {m['row']} ({m['reason']}){ece}")
    return lines
