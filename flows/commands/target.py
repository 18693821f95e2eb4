"""`fusionrx target GENE --store S`: one gene's score explained by every evidence row behind it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_target(args: argparse.Namespace) -> int:
    from flows.results.queries import explain_target

    out = explain_target(args.store, args.gene)
    if args.format == "json":
        print(json.dumps(out, indent=1, default=float))
        return 0
    print(f"{out['gene']}: rank {out['rank']}, score {out['score']:.3f} (run {out['run_id']}, "
          f"scoring {out['scoring_version']})")
    for e in out["evidence"]:
        print(f"  {e['type']:<22} score {e['score']:.3f} x weight {e['weight']:g} ({e['n_rows']} row(s))")
        for r in e["rows"]:
            print(f"      {r['source']}: {r['statistic']} = {r['raw_value']:.4g} -> {r['score']:.3f}  [{r['row_ref']}]")
    t = out["tractability"]
    best = "-" if t["best_pchembl"] is None else f"{t['best_pchembl']:.2f}"
    print(f"  tractability (not in the score) {t['score']:.3f}: best pChEMBL {best}, "
          f"{t['n_active_compounds']} active compound(s)")
    for c in out["compounds"]:
        print(f"      {c['id']} {c['name'] or ''} pChEMBL {c['pchembl']:.2f} ({c['link']}) {c['canonical_smiles']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `target` command."""
    p = sub.add_parser("target", help="explain one gene's target score: every evidence row behind it")
    p.add_argument("gene")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_cmd_target)
