"""Stage: the run's deployable models, after its experiments: per task (diagnosis, survival) the configuration
the experiment's ``best`` selection chose (else the row with the highest mean; neural or classical), refit on
every labelled patient, calibrated on the out-of-fold predictions and saved to ``STORE/models/<task>/``
(model.json + model.pt, or model.npz for a classical model; atomically) for patient reports.
Beside the diagnosis model, the report's slide heatmap model (fusion.slide_attention) when the experiment has
slide bags: ``STORE/models/diagnosis/slide_mil.pt``.

One fit per task (seconds): the experiment's data and results are reused, nothing is read again.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion.errors import FusionConfigError, FusionDataError

if TYPE_CHECKING:  # the engine (torch, scikit-learn) is imported where a model is fitted, not by a rerun's lines
    from fusion.experiment import ExperimentData, ExperimentOptions

MODELS_DIR = "models"
SLIDE_MIL_FILE = "slide_mil.pt"  # in STORE/models/diagnosis/: the report's slide heatmap model


def spec_options(spec_path: str | Path, data: ExperimentData) -> ExperimentOptions:
    """The engine options ``flows.experiments.runner.run_spec`` ran the spec with (MIL encoders for bags)."""
    from flows.experiments.spec import load_spec

    opts = load_spec(spec_path).experiment_options()
    if data.bags and opts.encoder_factories is None:
        from flows.experiments.bags import mil_encoder_factories

        opts = replace(opts, encoder_factories=mil_encoder_factories(data.bags, opts.embed_dim))
    return opts


def deploy_spec_model(store: str | Path, spec_path: str | Path, out: dict[str, Any]) -> dict[str, Any] | None:
    """Fit and save the deployed model of one experiment run (``out``: what run_spec returned: data, results,
    run); None for a task that has no deployed model (regression).

    Returns a summary {task, version, path, row, kind (neural | classical), strategy, modalities, head,
    temperature, ece_before, ece_after, ece_after_crossfit, reason, n_train, wall_s}. A model that cannot be
    fitted (no model row, covariates, too few patients) is reported as {task, skipped: why}; the run goes on.
    """
    from fusion.deploy import TASK_OF_KIND, fit_deployed, save_deployed

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
    slide = deploy_slide_attention(folder, data, opts.seed) if task == "diagnosis" else None
    cal = dm.info.get("calibration") or {}
    return {"task": task, "version": dm.version, "path": str(folder), "row": dm.chosen_by.get("row"),
            "kind": dm.kind, "strategy": dm.strategy, "modalities": dm.modalities, "head": dm.head, "temperature": dm.temperature,
            "ece_before": cal.get("ece_before"), "ece_after": cal.get("ece_after"),
            "ece_after_crossfit": cal.get("ece_after_crossfit"), "reason": dm.chosen_by.get("reason"),
            "n_train": dm.n_train, "slide_attention": slide, "wall_s": time.perf_counter() - t0}


def deploy_slide_attention(folder: Path, data: ExperimentData, seed: int) -> dict[str, Any] | None:
    """Fit the report's slide attention model on the diagnosis experiment's labelled slide bags (whole bags,
    fusion.slide_attention defaults, training seed ``seed``) and save it to ``folder/slide_mil.pt``
    atomically (after save_deployed, which swaps the whole folder). None without slide bags;
    {"skipped": why} when it cannot be fitted."""
    bags = (data.bags or {}).get("wsi")
    if data.task != "classification" or not bags:
        return None
    from flows.experiments.bags import mil_encoder_factories
    from fusion.slide_attention import SlideAttentionConfig, fit_slide_attention, save_slide_attention

    t0 = time.perf_counter()
    config = SlideAttentionConfig(seed=seed)
    labels = data.target["label"].dropna().astype(int).to_dict()
    try:
        model = fit_slide_attention(bags, labels, list(data.classes or []),
                                    mil_encoder_factories({"wsi": bags}, config.embed_dim)["wsi"], config)
    except (FusionDataError, FusionConfigError) as exc:
        return {"skipped": f"slide attention model not fitted: {exc}"}
    path = save_slide_attention(model, Path(folder) / SLIDE_MIL_FILE)
    return {"path": str(path), "version": model.version, "n_train": model.info["n_train"],
            "train_accuracy": model.info["train_accuracy"], "wall_s": time.perf_counter() - t0}


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
        slide = m.get("slide_attention") or {}
        if "skipped" in slide:
            lines.append(slide["skipped"])
        elif slide:
            lines.append(f"slide attention model {slide['version']}: {slide['n_train']} slides, "
                         f"training accuracy {slide['train_accuracy']:.2f}")
    return lines
