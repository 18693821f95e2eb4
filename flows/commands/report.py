"""`fusionrx report`: one patient's report (prediction, measured explanations, own target evidence).

- ``fusionrx report PATIENT --store S [--out DIR] [--format json]``: a cohort patient of the store;
- ``fusionrx report --new DIR --store S [--out OUT]``: a patient who is not in the cohort, from their folder
  (CT / PET DICOM + segmentations, optionally a slide) through the store's frozen encoders and saved models;
- ``fusionrx report --all --store S --out DIR``: every patient's report and an index page.

With ``--out`` the report is written as ``report.json`` and, through flows.patients.render, a self-contained
``report.html`` with its figures, ``attention.geojson`` (QuPath) and ``roi_seg.dcm`` (DICOM SEG). An unknown
patient id is an error naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _table(report: dict) -> str:
    """A short human summary of a report."""
    lines = [f"patient {report['patient_id']}"]
    d = report.get("diagnosis")
    if d:
        probs = ", ".join(f"{c} {p:.2f}" for c, p in sorted(d["probabilities"].items(), key=lambda kv: -kv[1]))
        lines.append(f"  diagnosis  {d['predicted']}  ({probs}; model {d['model']} {d['version']})")
    s = report.get("survival")
    if s:
        lines.append(f"  survival   risk {s['risk']:.3f} (percentile {s['risk_percentile']:.0f} of the cohort)")
    c = report.get("modality_contributions")
    if c:
        parts = ", ".join(f"{m} {v:+.3f}" for m, v in sorted(c["values"].items(), key=lambda kv: -abs(kv[1])))
        lines.append(f"  contributions (Shapley, base {c['base_value']:.3f}): {parts}")
    sl = report.get("slide")
    if sl:
        att = [t["attention"] for t in sl["tiles"] if t["attention"] is not None]
        lines.append(f"  slide      {len(sl['tiles'])} tiles" + (f", top attention {max(att):.3f}" if att else ""))
    r = report.get("radiology")
    if r:
        roi = r["roi"]
        vol = f"{roi['volume_ml']:.2f} ml" if roi.get("volume_ml") is not None else "no volume"
        lines.append(f"  radiology  ROI {roi['label']} ({roi['source']}), {vol}")
    sp = report.get("spatial")
    if sp:
        genes = ", ".join(g["gene"] for g in sp["top_genes"][:5])
        lines.append(f"  spatial    {len(sp['tumour_spots'])}/{sp['n_spots']} tumour spots; top genes {genes}")
    if report.get("neighbours"):
        lines.append("  neighbours " + ", ".join(f"{n['patient_id']} ({n['diagnosis']})" for n in report["neighbours"]))
    for t in report.get("targets", [])[:5]:
        e = t["evidence"]
        z = f"{e['expression_z']:+.2f}" if e["expression_z"] is not None else "-"
        sp_fc = f"{e['spatial_enrichment']:+.2f}" if e["spatial_enrichment"] is not None else "-"
        muts = ", ".join(e["mutation"]) if e["mutation"] else "-"
        cn = e["copy_number"] if e["copy_number"] is not None else "-"
        lines.append(f"  target #{t['rank']:<3d} {t['gene']:10s} expression z {z}, copy number {cn}, "
                     f"mutation {muts}, spatial log2FC {sp_fc}")
    timings = (report.get("new_patient") or {}).get("timings_s")
    if timings:
        lines.append("  timings    " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return "\n".join(lines)


def write_report(report: dict, store: Path, out: Path) -> Path:
    """``out/report.json`` and, when the renderer is present, ``out/report.html`` with its figures and exports;
    returns the page (or the JSON)."""
    from flows.store.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    try:
        from flows.patients.render import render_report
    except ImportError:
        return out / "report.json"
    return render_report(report, store, out)


def _cmd_report(args: argparse.Namespace) -> int:
    store = Path(args.store)
    chosen = [bool(args.patient), bool(args.new), bool(args.all)]
    if sum(chosen) != 1:
        print("fusionrx report: error: give exactly one of PATIENT, --new DIR or --all", file=sys.stderr)
        return 2
    if args.all:
        if not args.out:
            print("fusionrx report: error: --all needs --out DIR", file=sys.stderr)
            return 2
        from flows.patients.cohort_reports import write_cohort_reports

        index = write_cohort_reports(store, Path(args.out), log=print)
        print(f"[report] index {index}")
        return 0
    if args.new:
        from flows.patients.new_patient import new_patient_report

        work = Path(args.out) / "inputs" if args.out else None
        report = new_patient_report(Path(args.new), store, patient_id=args.id, work_dir=work).report
    else:
        from flows.patients.build import build_report

        report = build_report(store, args.patient)
    written = write_report(report, store, Path(args.out)) if args.out else None
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        print(_table(report))
    if written is not None:
        print(f"[report] wrote {written}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `report` to the CLI."""
    r = sub.add_parser("report", help="one patient's report: prediction, measured explanations, own target evidence")
    r.add_argument("patient", nargs="?", default=None, help="patient id of the store's cohort")
    r.add_argument("--store", required=True, type=Path)
    r.add_argument("--new", default=None, type=Path, metavar="DIR",
                   help="a new patient's folder (CT/PET DICOM + segmentations, optionally a slide)")
    r.add_argument("--id", default=None, help="with --new: the report's patient id (default: the DICOM PatientID)")
    r.add_argument("--all", action="store_true", help="every patient's report and an index page (needs --out)")
    r.add_argument("--out", default=None, type=Path, help="folder for report.json, report.html and its files")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=_cmd_report)
