"""The `fusionrx` command line: demo-data, run, targets, experiments.

Exit statuses: 0 done; 1 an unexpected error (a traceback); 2 a FusionRx error (one line naming the file or
setting) or bad arguments; 3 (``EXIT_SKIPPED``) `run` completed but reported and skipped some inputs (listed
in its summary); 130 interrupted (Ctrl-C); 143 stopped by SIGTERM (`schedule`: 0 when it stopped cleanly).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fusion.errors import FusionRxError

EXIT_ERROR = 2  # a FusionRxError: bad input or state, one line on stderr
EXIT_SKIPPED = 3  # `run` completed, some inputs reported and skipped
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    t0 = time.perf_counter()
    extra = {"signal": "interaction", "n_diagnoses": 2} if args.signal == "interaction" else {}
    generate_cohort(args.out, CohortConfig(n_patients=args.patients, seed=args.seed, **extra))
    print(f"[demo-data] wall time {time.perf_counter() - t0:.1f} s")
    return 0


def run_exit_status(summary: dict) -> int:
    """0 for a clean run; ``EXIT_SKIPPED`` when it completed but reported and skipped inputs."""
    return EXIT_SKIPPED if summary.get("skipped") else 0


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit(143) in the main thread, so that the run unwinds as on Ctrl-C:
    Prefect marks the flow run crashed, the store lock is released and the Prefect server child stopped."""
    def handler(signum: int, frame) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_run(args: argparse.Namespace) -> int:
    verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    from flows.console import quiet_prefect_env

    quiet_prefect_env(verbosity)  # before Prefect is imported: no telemetry, no per-task log lines
    from flows.catalog.schema import load_catalog
    from flows.config import load_run_config
    from flows.prefect_server import prefect_api
    from flows.store.run_lock import run_lock

    t0 = time.perf_counter()
    load_catalog(args.catalog)  # bad input or a busy store: refused before a server starts
    load_run_config(args.config)
    with run_lock(args.store):
        pass
    with sigterm_unwinds(), prefect_api() as api_ready:  # a server child (when none is configured) boots now
        from flows.pipeline import run_pipeline  # the slow imports overlap the server's start

        api_ready()
        summary = run_pipeline(args.catalog, args.store, config_path=args.config, verbosity=verbosity,
                               runner=args.runner, workers=args.workers, dask_address=args.dask_address)
    print(f"[run] run {summary['run_id']} finished in {time.perf_counter() - t0:.1f} s; "
          f"results DB {Path(args.store) / 'results.duckdb'}; report {summary['report']}")
    if not args.quiet:
        print(_table(summary["counts"], ["stage", "seconds", "cpu_s", "new", "changed", "reused", "failed"]))
    if summary.get("skipped"):
        print(f"[run] {len(summary['skipped'])} input(s) reported and skipped (exit status {EXIT_SKIPPED}):")
        for s in summary["skipped"]:
            print(f"  - {s['source']}: {s['error']}")
    return run_exit_status(summary)


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
    d.add_argument("--signal", choices=["linear", "interaction"], default="linear",
                   help="linear: every modality shifts with the 3-class diagnosis; interaction: a 2-class "
                        "diagnosis partly planted as expression subtype XOR PET phenotype (truth.json names it)")
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
    """Entry point; FusionRx errors print one clear line and exit 2, Ctrl-C exits 130 (module docstring)."""
    from flows.console import quiet_prefect_env

    quiet_prefect_env()  # before anything imports Prefect: no telemetry, no per-task log lines
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FusionRxError as exc:
        print(f"fusionrx: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fusionrx: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
