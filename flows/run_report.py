"""The HTML run report (and its JSON twin) kept in the store: per-stage timings and new / changed /
reused / failed counts, the inputs skipped with their error, and the headline metrics."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flows.store.artifacts import ArtifactStore

REPORT_DIR = "runs"

_CSS = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#eee}"
        "td:first-child,th:first-child{text-align:left}.failed{color:#b00}")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def report_record(run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a run that `fusionrx status` lists: counts per stage, failures, headline metrics."""
    metrics = summary.get("metrics", {})
    best = {}
    for task, rows in metrics.get("experiments", {}).items():
        if rows:
            name, r = max(rows.items(), key=lambda kv: kv[1]["mean"])
            best[task] = {"name": name, "metric": r["metric"], "mean": r["mean"], "std": r["std"]}
    return {"run_id": run_id, "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_s": summary.get("wall_s"), "counts": summary.get("counts", []), "skipped": summary.get("skipped", []),
            "n_patients_fusion": metrics.get("n_patients_fusion"), "modality_counts": metrics.get("modality_counts"),
            "best_experiments": best, "top_targets": metrics.get("top_targets", []),
            "patient_reports": summary.get("patient_reports")}


def render_html(rec: dict[str, Any]) -> str:
    """The run report as one self-contained HTML page."""
    best = [{"task": t, **b} for t, b in rec["best_experiments"].items()]
    mods = [{"modality": m, "patients": n} for m, n in (rec.get("modality_counts") or {}).items()]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>FusionRx run {html.escape(rec['run_id'])}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>FusionRx run {html.escape(rec['run_id'])}</h1><p>finished {html.escape(rec['finished_utc'])}; "
        f"run time {rec.get('wall_s')} s (flow, without the Prefect server start); {len(rec['skipped'])} input(s) skipped</p>",
        "<h2>Stages</h2><p>encoders are cohort models inside their stage (their seconds are part of it)</p>", _table(rec["counts"], ["stage", "seconds", "cpu_s", "new", "changed", "reused", "failed"]),
        "<h2>Failures (reported and skipped)</h2>", _table(rec["skipped"], ["source", "file", "error"]),
        "<h2>Headline metrics</h2>", _table(best, ["task", "name", "metric", "mean", "std"]),
        f"<p>patients in the fusion experiments: {rec.get('n_patients_fusion')}</p>",
        _table(mods, ["modality", "patients"]),
        "<h2>Top targets</h2><ol>" + "".join(f"<li>{html.escape(g)}</li>" for g in rec["top_targets"]) + "</ol>",
        (f"<h2>Patients</h2><p><a href='../reports/patients/index.html'>every patient's report</a> "
         f"({html.escape(str(rec['patient_reports']))})</p>" if rec.get("patient_reports") else ""),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_run_report(store: ArtifactStore, run_id: str, summary: dict[str, Any]) -> Path:
    """Write ``runs/<run_id>.report.json`` and ``runs/<run_id>.html`` atomically; the HTML path."""
    rec = report_record(run_id, summary)
    store.write_json(f"{REPORT_DIR}/{run_id}.report.json", rec)
    return store.write_text(f"{REPORT_DIR}/{run_id}.html", render_html(rec))


def recent_reports(store_root: str | Path, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` most recent run records of a store, newest first."""
    files = sorted(Path(store_root, REPORT_DIR).glob("*.report.json"), reverse=True)[:n]
    return [json.loads(f.read_text()) for f in files]
