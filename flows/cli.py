"""The `fusionrx` command line: demo-data, run, targets, experiments."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fusion.errors import FusionRxError


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    t0 = time.perf_counter()
    generate_cohort(args.out, CohortConfig(n_patients=args.patients, seed=args.seed))
    print(f"[demo-data] wall time {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    from flows.console import quiet_prefect_env

    quiet_prefect_env(verbosity)  # before Prefect is imported: no telemetry, no per-task log lines
    from flows.pipeline import run_pipeline

    t0 = time.perf_counter()
    summary = run_pipeline(args.catalog, args.store, config_path=args.config, verbosity=verbosity,
                           runner=args.runner, workers=args.workers, dask_address=args.dask_address)
    print(f"[run] run {summary['run_id']} finished in {time.perf_counter() - t0:.1f} s; "
          f"results DB {Path(args.store) / 'results.duckdb'}; report {summary['report']}")
    if not args.quiet:
        print(_table(summary["counts"], ["stage", "seconds", "cpu_s", "new", "changed", "reused", "failed"]))
    if summary.get("skipped"):
        print(f"[run] {len(summary['skipped'])} input(s) reported and skipped:")
        for s in summary["skipped"]:
            print(f"  - {s['source']}: {s['error']}")
    return 0


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    if not rows:
        return "(no rows)"
    return pd.DataFrame(rows)[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _cmd_targets(args: argparse.Namespace) -> int:
    from flows.results.queries import ranked_targets
    from flows.results.ranking import parse_weights

    weights = parse_weights(args.weights) if args.weights is not None else None
    page = ranked_targets(args.store, top=args.top, offset=args.offset, weights=weights, min_score=args.min_score,
                          has_compound=args.has_compound)
    rows = page["rows"]
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    flat = []
    for r in rows:
        flat.append({"rank": r["rank"], "gene": r["gene"], "score": r["score"],
                     **{k: v for k, v in r["evidence"].items()}, "tractability": r["tractability"],
                     "compounds (pchembl, measured|predicted)": ", ".join(
                         f"{c['name'] or c['id']} ({c['pchembl']:.1f}, {c['link']})" for c in r["compounds"][:3]) or "-"})
    cols = list(flat[0].keys()) if flat else []
    print(f"run {page['run_id']}, scoring {page['scoring_version']}, weights "
          + ", ".join(f"{k}={v:g}" for k, v in page["weights"].items()) + f"; {page['total']} genes match")
    print(_table(flat, cols))
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from flows.results.db import query_experiments

    rows = query_experiments(args.store)
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=float))
        return 0
    print(_table(rows, ["task", "kind", "name", "metric", "mean", "std", "n_folds"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `fusionrx` console script."""
    p = argparse.ArgumentParser(prog="fusionrx", description="Multimodal fusion and drug-target ranking")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="write a synthetic cohort in real formats (DICOM, TIFF, h5ad, GDC)")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--patients", type=int, default=60)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo_data)

    r = sub.add_parser("run", help="run the whole pipeline (Prefect flow) on a catalog")
    r.add_argument("--catalog", required=True, type=Path)
    r.add_argument("--store", required=True, type=Path)
    r.add_argument("--config", type=Path, default=None, help="YAML overrides of the run config")
    r.add_argument("--runner", choices=["local", "dask"], default="local",
                   help="Prefect task runner of the per-patient tasks (dask needs prefect-dask)")
    r.add_argument("--workers", type=int, default=2, help="parallel tasks (threads or Dask workers)")
    r.add_argument("--dask-address", default=None,
                   help="scheduler of a running Dask cluster (tcp://host:8786); with --runner dask")
    v = r.add_mutually_exclusive_group()
    v.add_argument("--quiet", action="store_true", help="no progress bars, only the final lines")
    v.add_argument("--verbose", action="store_true", help="Prefect's per-task log lines and stage details")
    r.set_defaults(func=_cmd_run)

    t = sub.add_parser("targets", help="query the ranked drug targets of the latest run")
    t.add_argument("--store", required=True, type=Path)
    t.add_argument("--top", type=int, default=10)
    t.add_argument("--offset", type=int, default=0, help="skip this many ranked rows (paging)")
    t.add_argument("--format", choices=["table", "json"], default="table")
    t.add_argument("--weights", default=None, metavar="TYPE=W,...",
                   help="replace the configured evidence weights (a type not named gets 0); types: "
                        "rna_expression, copy_number, survival_association, spatial_tumour_region, "
                        "somatic_mutation, model_attribution")
    t.add_argument("--min-score", type=float, default=None, help="only targets with score >= this (0..1)")
    t.add_argument("--has-compound", action="store_true",
                   help="only targets with a linked active compound (pChEMBL >= 6, measured or predicted)")
    t.set_defaults(func=_cmd_targets)

    e = sub.add_parser("experiments", help="query the fusion experiments (CV metric per strategy/modality)")
    e.add_argument("--store", required=True, type=Path)
    e.add_argument("--format", choices=["table", "json"], default="table")
    e.set_defaults(func=_cmd_experiments)

    from flows.commands import register_all

    register_all(sub)  # one module per further command in flows/commands/
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; FusionRx errors print one clear line and exit 2."""
    from flows.console import quiet_prefect_env

    quiet_prefect_env()  # before anything imports Prefect: no telemetry, no per-task log lines
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FusionRxError as exc:
        print(f"fusionrx: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
