"""`fusionrx experiment SPEC.yaml --store STORE [--format json]`: every model of a spec on the same folds."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_experiment(args: argparse.Namespace) -> int:
    from flows.experiments.runner import run_spec
    from fusion.errors import FusionRxError

    say = (lambda s: print(f"[experiment] {s}", file=sys.stderr, flush=True)) if args.format == "json" else \
        (lambda s: print(f"[experiment] {s}", flush=True))
    try:
        out = run_spec(args.spec, args.store, tracking_uri=args.tracking_uri, mlflow=not args.no_mlflow,
                       report=args.report, progress=say, workers=args.workers)
    except FusionRxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = out["rows"]
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=float))
        return 0
    from flows.experiments.report import metric_table

    table = metric_table(rows, published="(published)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"[experiment] run {out['run']['run_id']} in {out['run']['wall_s']:.0f} s; report {out['report']}; "
          f"results DB {args.store}/results.duckdb" + (f"; MLflow {out['run']['tracking_uri']}" if not args.no_mlflow else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `experiment` command."""
    p = sub.add_parser("experiment", help="run a fusion experiment spec (YAML) over a feature table or a store")
    p.add_argument("spec", help="experiment spec (YAML)")
    p.add_argument("--store", required=True, help="store whose results DB (and default MLflow file store) records the run")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: file store STORE/mlruns)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--report", default=None, help="HTML report path (default STORE/reports/<run>.html)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes training the neural models (results do not depend on it)")
    p.set_defaults(func=_cmd_experiment)
