"""`fusionrx similar SMILES --store S [--top K]`: nearest compounds (Morgan/Tanimoto) and their targets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_similar(args: argparse.Namespace) -> int:
    from flows.results.queries import similar_compounds

    out = similar_compounds(args.store, args.smiles, top=args.top)
    if args.format == "json":
        print(json.dumps(out, indent=1, default=float))
        return 0
    print(f"query {out['query']} (run {out['run_id']})")
    for h in out["hits"]:
        targets = ", ".join(f"{t['gene']} ({t['pchembl']:.1f}, {t['link']})" for t in h["targets"][:4]) or "-"
        print(f"  {h['tanimoto']:.3f}  {h['id']} {h['name'] or ''}  targets: {targets}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `similar` command."""
    p = sub.add_parser("similar", help="nearest compounds to a SMILES (Morgan fingerprints, Tanimoto) and their targets")
    p.add_argument("smiles")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_cmd_similar)
