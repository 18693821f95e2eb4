"""HTML report of an experiment run: one self-contained file (matplotlib PNGs embedded as base64).

Sections: table of mean +- std per model with per-fold points, each fusion row's paired per-fold gain over
the best single modality (mean +- standard error), secondary metrics (survival: td-AUC,
integrated Brier score and its Kaplan-Meier reference) and published numbers beside ours;
Kaplan-Meier curves of predicted risk groups (lifelines; out-of-fold risk split at each fold's
median) or ROC curves (classification) or predicted-vs-observed (regression); the missing-modality
robustness curve; modality contributions (drop-one change of the metric); classification: calibration
(reliability diagram, ECE before and after temperature scaling; flows.experiments.calibration_section).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from fusion.experiment import ExperimentData, ModelResult, paired_gain


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _fmt_other(row: dict, key: str, n_folds: int) -> str:
    """Mean of a secondary metric, with [finite folds/folds] when some fold could not support it."""
    v = (row.get("other_metrics") or {}).get(key)
    if v is None:
        return ""
    n = (row.get("other_metrics_folds") or {}).get(key, n_folds)
    return f"{v:.3f}" + (f" [{n}/{n_folds}]" if n < n_folds else "")


NOT_FUSION = ("single", "baseline", "published", "best")


def _best_single(row: dict, rows: list[dict]) -> dict | None:
    """The single-modality row with the highest mean on the same folds: among those of ``row``'s head when
    any has it (a fusion/nll row faces single/nll rows), else among all single rows. The nested-selection
    row ``best`` faces ``best:single`` (the best single modality chosen by nested CV, fusion.nested)."""
    if row["name"] == "best":
        nested = [r for r in rows if r["name"] == "best:single" and len(r["folds"]) == len(row["folds"])]
        if nested:
            return nested[0]
    singles = [r for r in rows if r["strategy"] == "single" and len(r["folds"]) == len(row["folds"])]
    same_head = [r for r in singles if r.get("head") == row.get("head")]
    return max(same_head or singles, key=lambda r: r["mean"], default=None)


def gain_column(rows: list[dict]) -> list[str]:
    """Per row: a fusion row's paired per-fold gain over the best single modality, 'mean +- se vs NAME'
    (fusion.experiment.paired_gain); '' for other rows and where no single row shares the folds."""
    out = []
    for r in rows:
        best = _best_single(r, rows) if (r["strategy"] not in NOT_FUSION or r["name"] == "best") and r["folds"] else None
        if best is None:
            out.append("")
            continue
        mean, se = paired_gain(r["folds"], best["folds"])
        out.append(f"{mean:+.3f} +- {se:.3f} vs {best['name']}")
    return out


def metric_table(rows: list[dict], published: str = "published") -> pd.DataFrame:
    """One line per model: primary metric mean, std, (fusion rows) the paired gain over the best single
    modality, folds, then every secondary metric (td_auc, ibs, ...).

    ``gain_vs_best_single`` (only when some fusion row has one): mean and standard error of the per-fold
    differences to the best single modality (see ``gain_column``). ``ibs`` / ``ibs_km``: integrated Brier
    score of the model / of the training-fold Kaplan-Meier curve (lower is better; a model below ``ibs_km``
    beats the covariate-free null model).
    """
    order = ("td_auc", "ibs", "ibs_km")
    keys = sorted({k for r in rows for k in (r.get("other_metrics") or {})},
                  key=lambda k: (order.index(k) if k in order else len(order), k))
    n_folds = max((len(r["folds"]) for r in rows), default=0)
    gains = gain_column(rows)
    table = pd.DataFrame([{"model": r["name"], "metric": r["metric"], "mean": r["mean"], "std": r["std"],
                           "folds": " ".join(f"{v:.3f}" for v in r["folds"]) or published,
                           **{k: _fmt_other(r, k, n_folds) for k in keys}} for r in rows])
    if any(gains):
        table.insert(4, "gain_vs_best_single", gains)
    return table


def _table_plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1))
    for i, r in enumerate(rows):
        color = "tab:gray" if r["strategy"] == "published" else "tab:blue"
        ax.errorbar(r["mean"], i, xerr=r["std"] or 0, fmt="o", color=color)
        ax.scatter(r["folds"], [i] * len(r["folds"]), s=10, color="black", alpha=0.5)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.axvline(0.5 if rows and rows[0]["metric"] in ("c_index", "auc") else 0.0, ls=":", color="gray")
    ax.set_xlabel(rows[0]["metric"] if rows else "")
    ax.invert_yaxis()
    return fig


def _km_plot(res: ModelResult, data: ExperimentData):
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    oof = res.oof.copy()
    oof["high"] = oof.groupby("fold")["prediction"].transform(lambda s: s > s.median())
    t = data.target.loc[oof["patient"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups = {}
    for label, g in (("low risk", False), ("high risk", True)):
        m = (oof["high"] == g).to_numpy()
        groups[g] = (t["time"].to_numpy()[m], t["event"].to_numpy()[m])
        KaplanMeierFitter().fit(*groups[g], label=f"{label} (n={m.sum()})").plot_survival_function(ax=ax)
    p = logrank_test(groups[False][0], groups[True][0], groups[False][1], groups[True][1]).p_value
    ax.set_title(f"{res.name}: out-of-fold risk groups, log-rank p={p:.2g}")
    ax.set_xlabel("time")
    return fig


def _roc_plot(res: ModelResult, data: ExperimentData):
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y = data.target.loc[res.oof["patient"], "label"].to_numpy()
    cols = [c for c in res.oof.columns if c.startswith("p_")] or ["prediction"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    classes = data.classes or []
    for j, c in enumerate(cols):
        cls = j if len(cols) > 1 else 1
        if (y == cls).any() and (y != cls).any():
            fpr, tpr, _ = roc_curve(y == cls, res.oof[c])
            ax.plot(fpr, tpr, label=f"{classes[cls] if cls < len(classes) else cls} vs rest")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_title(f"{res.name}: out-of-fold ROC")
    ax.legend(fontsize=7)
    return fig


def _robustness_plot(results: list[ModelResult]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in results:
        curve = r.extra["robustness"]
        xs = sorted(curve, key=float)
        ax.plot([float(x) for x in xs], [curve[x] for x in xs], marker="o", label=r.name)
    ax.set_xlabel("fraction of modalities dropped at test time")
    ax.set_ylabel(results[0].metric)
    ax.legend(fontsize=7)
    return fig


def write_report(path: Path, title: str, results: list[ModelResult], reference: list[dict],
                 data: ExperimentData, run_info: dict) -> Path:
    """Write the HTML report to ``path`` (atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    rows = [r.row() for r in results] + list(reference)
    table = metric_table(rows)
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>run {html.escape(run_info.get('run_id', ''))}, {run_info.get('n_patients')} patients, "
             f"{run_info.get('n_folds')} folds, code {html.escape(str(run_info.get('code_version')))}</p>",
             "<h2>Models (mean &plusmn; std over folds; dots: folds; grey: published)</h2>",
             table.to_html(index=False, float_format=lambda v: f"{v:.3f}"), _png(_table_plot(rows))]
    if "gain_vs_best_single" in table:
        parts.append("<p>gain_vs_best_single: mean &plusmn; standard error (sd/&radic;folds) of the per-fold "
                     "difference between a fusion model and the best single modality on the same folds; a gain "
                     "within about two standard errors of 0 is not evidence that fusion helps.</p>")
    nested = [r for r in results if r.strategy == "best"]
    if nested:
        parts.append("<h2>Nested selection (what 'best' chose in each outer fold, by inner CV on its training "
                     "patients)</h2>")
        parts.append(pd.DataFrame({r.name: r.extra["chosen"] for r in nested},
                                  index=[f"fold {k}" for k in range(len(nested[0].folds))]).to_html())
    if data.task == "survival":
        parts.append("<p>td_auc: mean cumulative/dynamic AUC (higher is better); ibs: integrated Brier score of "
                     "the model's survival functions, ibs_km: of the training-fold Kaplan-Meier curve (lower is "
                     "better; below ibs_km beats the null model); [k/n]: mean over the k folds able to support it.</p>")
    best = max(results, key=lambda r: r.mean)
    baseline = [r for r in results if r.strategy == "baseline"]
    if data.task == "survival":
        parts.append("<h2>Kaplan-Meier curves of predicted risk groups</h2>")
        for r in [best] + baseline[:1]:
            parts.append(_png(_km_plot(r, data)))
    elif data.task == "classification":
        parts.append("<h2>ROC curves (out-of-fold)</h2>")
        for r in [best] + baseline[:1]:
            parts.append(_png(_roc_plot(r, data)))
        from flows.experiments.calibration_section import calibration_section

        parts.append(calibration_section(results, data))
    robust = [r for r in results if "robustness" in r.extra]
    if robust:
        parts += ["<h2>Missing-modality robustness</h2>", _png(_robustness_plot(robust)),
                  "<h2>Modality contributions (metric with all modalities minus metric without it)</h2>",
                  pd.DataFrame({r.name: r.extra["contributions"] for r in robust}).T.to_html(
                      float_format=lambda v: f"{v:+.3f}")]
    parts.append("</body></html>")
    from flows.store.artifacts import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
        tmp.chmod(0o644)  # mkstemp creates 0600; a report is meant to be shared
    return Path(path)
