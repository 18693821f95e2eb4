"""`fusionrx status`: the recent runs of a store with their per-stage counts and failures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def format_status(records: list[dict], store: Path, running: dict | None) -> str:
    """Human-readable status of a store: the run holding its lock, then one block per recent run."""
    lines = [f"store {store}"]
    lines.append(f"running now: pid {running.get('pid')} on {running.get('host')} since {running.get('started_utc')}"
                 if running else "running now: none")
    if not records:
        lines.append("no finished runs")
    for rec in records:
        total = {s: sum(r[s] for r in rec["counts"]) for s in ("new", "changed", "reused", "failed")}
        lines.append(f"\nrun {rec['run_id']}  finished {rec['finished_utc']}  {rec.get('wall_s')} s  "
                     + "  ".join(f"{k} {v}" for k, v in total.items()) + f"  skipped {len(rec['skipped'])}")
        for r in rec["counts"]:
            lines.append(f"  {r['stage']:<16} {r['seconds']:7.1f} s  new {r['new']:>3}  changed {r['changed']:>3}  "
                         f"reused {r['reused']:>3}  failed {r['failed']:>3}")
        for s in rec["skipped"]:
            lines.append(f"  ! {s['source']}: {s['error']}")
    return "\n".join(lines)


def running_holder(store: Path) -> dict | None:
    """The pid/host/start of the run holding the store's lock, or None when no run holds it."""
    from flows.store.run_lock import run_lock
    from fusion.errors import StoreBusyError

    if not (store / ".run.lock").exists():
        return None
    try:
        with run_lock(store):
            return None
    except StoreBusyError:
        return json.loads((store / ".run.lock").read_text() or "{}")


def _cmd_status(args: argparse.Namespace) -> int:
    from flows.run_report import recent_reports
    from fusion.errors import FusionRxError

    if not args.store.is_dir():
        raise FusionRxError(f"{args.store}: store folder does not exist")
    records = recent_reports(args.store, args.last)
    if args.format == "json":
        print(json.dumps(records, indent=1))
    else:
        print(format_status(records, args.store, running_holder(args.store)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx status`."""
    s = sub.add_parser("status", help="recent runs of a store with their counts and failures")
    s.add_argument("--store", required=True, type=Path)
    s.add_argument("--last", type=int, default=5, help="how many recent runs")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.set_defaults(func=_cmd_status)
