"""Reports for the cohort: every patient's report (``OUT/<patient>/report.json`` and, with the renderer,
``report.html`` and its files) and an index page (``OUT/index.html`` + ``OUT/index.json``) linking them.

The store is read once (one ``PatientStore``: the deployed models applied to the cohort once); a patient
whose report cannot be built or drawn is listed in the index with the error, never stopping the others.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Callable

from flows.store.atomic import atomic_path
from fusion.errors import FusionRxError


def _row(report: dict[str, Any], page: str) -> dict[str, Any]:
    """One index row of a report."""
    d, s = report.get("diagnosis") or {}, report.get("survival") or {}
    probs = d.get("probabilities") or {}
    return {"patient_id": report["patient_id"], "recorded": d.get("recorded"), "predicted": d.get("predicted"),
            "probability": probs.get(d.get("predicted")), "risk": s.get("risk"),
            "risk_percentile": s.get("risk_percentile"),
            "modalities": sorted({m for ms in (report.get("modalities") or {}).values() for m in ms}),
            "page": page, "error": None}


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec) if isinstance(value, float) else html.escape(str(value))


def index_html(rows: list[dict[str, Any]], store: Path, run_id: str | None) -> str:
    """The index page: one row per patient (recorded and predicted diagnosis, its probability, risk and its
    percentile, modalities) linking the patient's page; errors shown in their row."""
    body = []
    for r in rows:
        pid = html.escape(r["patient_id"])
        link = f'<a href="{html.escape(r["page"])}">{pid}</a>' if r.get("page") else pid
        if r.get("error"):
            body.append(f"<tr><td>{link}</td><td colspan=6 class=err>{html.escape(r['error'])}</td></tr>")
            continue
        ok = r["recorded"] is not None and r["recorded"] == r["predicted"]
        body.append(f"<tr><td>{link}</td><td>{_fmt(r['recorded'])}</td><td{' class=ok' if ok else ''}>"
                    f"{_fmt(r['predicted'])}</td><td>{_fmt(r['probability'])}</td><td>{_fmt(r['risk'])}</td>"
                    f"<td>{_fmt(r['risk_percentile'], '.0f')}</td>"
                    f"<td>{html.escape(', '.join(r['modalities']))}</td></tr>")
    return ("<!doctype html><html><head><meta charset=utf-8><title>FusionRx patient reports</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;"
            "border-bottom:1px solid #ddd;text-align:left}.ok{color:#060}.err{color:#a00}</style></head><body>"
            f"<h1>Patient reports</h1><p>store {html.escape(str(store))}, run {html.escape(str(run_id))}, "
            f"{len(rows)} patients</p><table><tr><th>patient</th><th>recorded diagnosis</th><th>predicted</th>"
            "<th>P(predicted)</th><th>risk</th><th>risk percentile</th><th>modalities</th></tr>"
            + "".join(body) + "</table></body></html>")


def write_cohort_reports(store: str | Path, out: str | Path, *, patients: list[str] | None = None,
                         render: bool = True, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Every patient's report (or those of ``patients``) under ``out/<patient>/`` and the index
    (``out/index.html``, ``out/index.json``); returns the index page. ``render``: also draw each report.html
    (flows.patients.render, when present)."""
    from flows.patients.build import PatientStore

    ps, out = PatientStore(store), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from flows.patients.render import render_report
    except ImportError:
        render_report = None
    rows, t0 = [], time.perf_counter()
    for pid in ps.patients() if patients is None else patients:
        folder = out / pid
        try:
            report = ps.report(pid)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / "report.json") as tmp:
                tmp.write_text(json.dumps(report, indent=1))
            page = f"{pid}/report.json"
            if render and render_report is not None:
                render_report(report, ps.root, folder)
                page = f"{pid}/report.html"
            rows.append(_row(report, page))
        except FusionRxError as exc:  # one patient's bad input: listed with its error, the others go on
            rows.append({"patient_id": pid, "page": None, "error": f"{type(exc).__name__}: {exc}"})
            log(f"[report] {pid}: {type(exc).__name__}: {exc}")
    with atomic_path(out / "index.json") as tmp:
        tmp.write_text(json.dumps({"store": str(ps.root), "run_id": ps.run_record.get("run_id"), "patients": rows},
                                  indent=1))
    page = out / "index.html"
    with atomic_path(page) as tmp:
        tmp.write_text(index_html(rows, ps.root, ps.run_record.get("run_id")), encoding="utf-8")
    log(f"[report] {sum(r['error'] is None for r in rows)}/{len(rows)} patient reports in "
        f"{time.perf_counter() - t0:.1f} s: {page}")
    return page
