"""`fusionrx scan DIR [--out CATALOG] [--format json]`: what is in a folder, recognised by content."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _summary(result: dict) -> str:
    lines = [f"scan of {result['root']}: {len(result['patients'])} patient(s)"]
    for pid, mods in result["patients"].items():
        parts = []
        for m, items in mods.items():
            n_files = [i.get("n_files") for i in items if i.get("n_files")]
            parts.append(f"{m} x{len(items)}" + (f" ({'+'.join(map(str, n_files))} files)" if n_files else ""))
        lines.append(f"  {pid}: " + ", ".join(parts))
    for key, items in result["cohort"].items():
        lines.append(f"  cohort {key}: " + ", ".join(Path(i["path"]).name for i in items))
    joins = result.get("id_joins", {})
    if joins:
        lines.append(f"ids joined across modalities: {len(joins['joined'])}"
                     + (f"; found in one modality only: {', '.join(joins['one_modality_only'])}"
                        if joins["one_modality_only"] else ""))
    lines.append(f"{len(result['problems'])} problem(s), {len(result['unrecognised'])} unrecognised file(s)")
    lines += [f"  ! {p['path']}: {p['error']}" for p in result["problems"]]
    return "\n".join(lines)


def _cmd_scan(args: argparse.Namespace) -> int:
    from flows.catalog.scan import scan
    from flows.catalog.write import write_scan_catalog

    result = scan(args.dir)
    if args.out:
        path, notes = write_scan_catalog(result, args.out, args.cohort)
        result["catalog"] = {"path": str(path), "notes": notes}
    if args.format == "json":
        print(json.dumps(result, indent=1, default=str))
    else:
        print(_summary(result))
        if args.out:
            print(f"catalog written to {result['catalog']['path']}")
            for n in result["catalog"]["notes"]:
                print(f"  note: {n['path']}: {n['error']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `scan` to the CLI."""
    p = sub.add_parser("scan", help="recognise DICOM, slides, spatial, GDC and feature files in a folder by content")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, help="write a data catalog that `fusionrx run` accepts")
    p.add_argument("--cohort", help="cohort name in the written catalog (default: the folder name)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_cmd_scan)
