"""One entry point for every benchmark: ``python -m bench [--quick] [--only NAME ...] [--out bench/all.json]``.

Discovers the ``bench/*.py`` modules. A module exposing ``run(quick: bool) -> list[dict]`` is called and its
rows (what / ours / baseline / baseline_name / ratio / unit / command) are used as they are; a script without
``run`` is run by subprocess (with its known arguments, ``--out`` to a temp JSON) and every object in its JSON
that carries a ``ratio`` becomes a row. Prints ONE table: each figure beside its named baseline and ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"__init__", "__main__", "childproc", "fuzz_outputs"}
# scripts without run(): arguments for a quick and a full pass; None = needs inputs, not run unattended
SCRIPT_ARGS: dict[str, tuple[list[str], list[str]] | None] = {
    "run_benchmarks": ([], []),
    "dicom_bench": (["--slices", "40", "--repeats", "2"], []),
    "slide_tiles": (["--side", "4096"], []),
    "targets_bench": (["--genes", "2000", "--compounds", "10000", "--repeats", "3"], []),
    "gpu_check": (["--quick", "--cpu-only"], ["--cpu-only"]),
    "experiment_bench": None,  # needs the real cohorts (--cohorts); run it by hand
    "federated_bench": None,  # needs --catalog and --store
    "davis_bench": None,  # needs the DAVIS data set
    "fuzz_cohort": None,  # --out is its working folder: run it by hand (see docs/benchmarks.md)
    "demo_run": (["--patients", "24"], ["--commits", "6abebe9", "HEAD", "--rerun"]),
}
COLUMNS = ("what", "ours", "baseline", "baseline_name", "ratio", "unit", "command")
# scripts whose run() is long: only with --all or --only (scaling reruns the pipeline 2-4 times)
SLOW = {"scaling", "fullsize", "demo_run", "explain_faithfulness"}


def discover() -> list[str]:
    """Benchmark module names in bench/ (helpers left out)."""
    return sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in HELPERS)


def rows_from_json(obj, command: str, prefix: str = "") -> list[dict]:
    """Every dict with a 'ratio' in a results JSON, as a table row (run_benchmarks' and similar layouts)."""
    out: list[dict] = []
    if isinstance(obj, dict):
        if "ratio" in obj:
            ours = next((obj[k] for k in ("ours", "fusionrx", "value", "ours_per_s") if k in obj), None)
            out.append({"what": str(obj.get("what") or obj.get("name") or prefix), "ours": ours,
                        "baseline": obj.get("baseline"), "baseline_name": str(obj.get("baseline_name", "")),
                        "ratio": obj.get("ratio"), "unit": str(obj.get("unit", "")), "command": command})
            return out
        for k, v in obj.items():
            out += rows_from_json(v, command, f"{prefix}{k}." if prefix else f"{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += rows_from_json(v, command, f"{prefix}{i}.")
    return out


def run_script(name: str, quick: bool) -> list[dict]:
    """Run a script without run() by subprocess and read the rows from its --out JSON."""
    args = SCRIPT_ARGS[name]
    extra = args[0] if quick else args[1]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"{name}.json"
        cmd = [sys.executable, f"bench/{name}.py", *extra, "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        shown = "PYTHONPATH=. python " + " ".join(cmd[1:-2])
        if proc.returncode != 0:
            raise RuntimeError(f"{shown} failed (rc {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return rows_from_json(json.loads(out.read_text()), shown)


def run_one(name: str, quick: bool) -> list[dict]:
    """Rows of one benchmark module (run() when it has one, else its script)."""
    mod = importlib.import_module(f"bench.{name}")
    if hasattr(mod, "run"):
        return mod.run(quick)
    if SCRIPT_ARGS.get(name, ()) is None or name not in SCRIPT_ARGS:
        raise LookupError("no run() and no known arguments to run it unattended")
    return run_script(name, quick)


def fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def print_table(rows: list[dict]) -> None:
    """One table: figure, ours, baseline (named), ratio, unit, command."""
    cells = [[fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(COLUMNS)]
    widths[-1] = len(COLUMNS[-1])  # the command column is not padded
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    for x in cells:
        print("  ".join(v.ljust(w) for v, w in zip(x, widths)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes: a fast pass")
    p.add_argument("--only", nargs="+", default=None, help="benchmark module names (default: all found)")
    p.add_argument("--all", action="store_true", help=f"include the long ones ({', '.join(sorted(SLOW))})")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "all.json")
    args = p.parse_args(argv)
    names = args.only or [n for n in discover() if args.all or n not in SLOW]
    rows, notes = [], []
    for name in names:
        t0 = time.perf_counter()
        try:
            got = run_one(name, args.quick)
            rows += got
            notes.append(f"{name}: {len(got)} row(s) in {time.perf_counter() - t0:.0f} s")
        except Exception as exc:  # one broken benchmark never hides the others
            notes.append(f"{name}: not run ({type(exc).__name__}: {str(exc)[:200]})")
        print(f"[bench] {notes[-1]}", file=sys.stderr, flush=True)
    print_table(rows)
    for n in notes:
        print(f"  - {n}")
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "quick": args.quick,
                                    "rows": rows, "notes": notes}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
