"""The experiment report's calibration section (classification): per model the top-label expected calibration
error of its out-of-fold probabilities before and after temperature scaling, and the reliability diagram of the
model the run deploys (fusion.deploy.deploy_choice).

"After" is cross-fitted: each outer fold's predictions are scaled with the temperature fitted on the other
folds' predictions (fusion.calibration.crossfit_temperature), so the figure is not flattered by fitting the
temperature on the rows it is measured on. The temperature shown is the one fitted on every fold (the one a
deployed model uses).
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd

from fusion.calibration import calibration_summary, crossfit_temperature, oof_log_probs, reliability_bins
from fusion.errors import FusionDataError
from fusion.experiment import ExperimentData, ModelResult

N_BINS = 10


def calibration_table(results: Sequence[ModelResult], data: ExperimentData, n_bins: int = N_BINS) -> pd.DataFrame:
    """One line per classification row with out-of-fold probabilities: model, temperature, ece_before,
    ece_after (cross-fitted), nll_before, nll_after (temperature fitted on every fold), n. A row whose
    predictions cannot be read as probabilities (e.g. NaN) is listed with NaN figures."""
    out = []
    for r in results:
        if r.oof is None or r.oof.empty:
            continue
        try:
            pats, folds, logp = oof_log_probs(r.oof)
            y = data.target.loc[pats, "label"].to_numpy(np.int64)
            s = calibration_summary(logp, y, folds, n_bins)
        except FusionDataError:
            out.append({"model": r.name, "n": len(r.oof)})
            continue
        out.append({"model": r.name, "temperature": s["temperature"], "ece_before": s["ece_before"],
                    "ece_after": s["ece_after_crossfit"], "nll_before": s["nll_before"],
                    "nll_after": s["nll_after"], "n": s["n"]})
    return pd.DataFrame(out, columns=["model", "temperature", "ece_before", "ece_after", "nll_before", "nll_after",
                                      "n"])


def _diagram_row(results: Sequence[ModelResult]) -> ModelResult:
    """The row whose configuration the run deploys, else the highest mean."""
    from fusion.deploy import deploy_choice

    try:
        name = deploy_choice([{**r.row(), "extra": r.extra} for r in results])[3]["row"]
        return next(r for r in results if r.name == name)
    except (FusionDataError, StopIteration):
        return max(results, key=lambda r: r.mean)


def reliability_plot(res: ModelResult, data: ExperimentData, n_bins: int = N_BINS):
    """Reliability diagram (top-label accuracy vs confidence per bin, marker area ~ count) of ``res``'s
    out-of-fold probabilities before and after (cross-fitted) temperature scaling."""
    import matplotlib.pyplot as plt

    pats, folds, logp = oof_log_probs(res.oof)
    y = data.target.loc[pats, "label"].to_numpy(np.int64)
    after, _ = crossfit_temperature(logp, y, folds)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for label, lp, color in (("before", logp, "tab:red"), ("after temperature scaling", after, "tab:blue")):
        t = reliability_bins(np.exp(lp), y, n_bins)
        t = t[t["count"] > 0]
        ax.plot(t["confidence"], t["accuracy"], "-o", color=color, label=label, markersize=3)
        ax.scatter(t["confidence"], t["accuracy"], s=8 + 60 * t["count"] / t["count"].max(), color=color, alpha=0.4)
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{res.name}: out-of-fold reliability")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def calibration_section(results: Sequence[ModelResult], data: ExperimentData, n_bins: int = N_BINS) -> str:
    """HTML: heading, the reliability diagram (PNG inline) of the deployed configuration and the ECE table;
    '' for tasks other than classification or without out-of-fold probabilities."""
    if data.task != "classification":
        return ""
    rows = [r for r in results if r.oof is not None and not r.oof.empty and r.strategy != "published"]
    if not rows:
        return ""
    from flows.experiments.report import _png

    table = calibration_table(rows, data, n_bins)
    try:
        figure = _png(reliability_plot(_diagram_row(rows), data, n_bins))
    except FusionDataError as exc:
        figure = f"<p>no reliability diagram: {html.escape(str(exc))}</p>"
    return "\n".join([
        "<h2>Calibration (out-of-fold probabilities)</h2>",
        figure,
        table.to_html(index=False, float_format=lambda v: f"{v:.3f}"),
        f"<p>ece: top-label expected calibration error over {n_bins} equal-width confidence bins (0 = calibrated); "
        "ece_after: with each fold's probabilities scaled by the temperature fitted on the other folds "
        "(softmax(log p / T)); temperature: fitted on every fold, as the deployed model uses it "
        "(T &gt; 1: the model was over-confident). nll: mean negative log-likelihood.</p>"])
