"""Run two commits of FusionRx on the same fixed-seed generated cohort, on this machine, and compare outputs.

    python bench/compare_commits.py --before f5a95e3 --after HEAD [--patients 24] [--seed 7]

Each commit is checked out into a temporary git worktree and imported from there (the active venv
provides the dependencies). Both runs read one generated cohort (written by the BEFORE commit's
generator) with the same run config; the script then compares, commit against commit:
the ranked targets (gene, rank, score and every evidence score), the experiments table (every metric),
and the imaging phenotypes. Exit 1 when anything differs by more than --tol. Floating point differs
across machines, so this compares two runs on one machine, never against a stored golden.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "cv_repeats: 1\ncv_splits: 3\nfusion_epochs: 30\n"


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode not in (0, 3):  # 3: a run that completed with inputs reported and skipped
        raise SystemExit(f"{' '.join(cmd)} (in {cwd}) failed with {out.returncode}:\n{out.stderr[-3000:]}")
    return out.stdout


def _cli(tree: Path, env: dict[str, str], *args: str) -> str:
    return _sh([sys.executable, "-m", "flows.cli", *args], tree, {**env, "PYTHONPATH": str(tree)})


def _outputs(tree: Path, store: Path, env: dict[str, str]) -> dict:
    targets, offset = [], 0
    while True:  # every ranked target, a page of 1000 at a time
        page = json.loads(_cli(tree, env, "targets", "--store", str(store), "--top", "1000", "--offset", str(offset),
                               "--format", "json"))
        rows = page["targets"] if isinstance(page, dict) else page
        targets += rows
        if len(rows) < 1000:
            break
        offset += 1000
    experiments = json.loads(_cli(tree, env, "experiments", "--store", str(store), "--format", "json"))
    return {"targets": targets, "experiments": experiments}


def _diff(a, b, path: str, tol: float, out: list[str], volatile: set[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in volatile:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{path}.{k}", tol, out, volatile)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", tol, out, volatile)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not (math.isclose(a, b, rel_tol=tol, abs_tol=tol) or (a != a and b != b)):
            out.append(f"{path}: {a} vs {b}")
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True)
    p.add_argument("--after", default="HEAD")
    p.add_argument("--patients", type=int, default=24)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tol", type=float, default=1e-9)
    p.add_argument("--work", type=Path, help="keep the worktrees and stores here (default: a temp folder)")
    args = p.parse_args()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with tempfile.TemporaryDirectory(prefix="fusionrx-compare-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        trees = {}
        for name, rev in (("before", args.before), ("after", args.after)):
            trees[name] = work / name
            if not trees[name].exists():
                _sh(["git", "worktree", "add", "--detach", str(trees[name]), rev], ROOT, env)
        try:
            data = work / "cohort"
            if not data.exists():
                _cli(trees["before"], env, "demo-data", "--out", str(data), "--patients", str(args.patients),
                     "--seed", str(args.seed))
            (work / "config.yaml").write_text(CONFIG)
            results = {}
            for name, tree in trees.items():
                store = work / f"store-{name}"
                _cli(tree, env, "run", "--catalog", str(data / "data_catalog.yaml"), "--store", str(store),
                     "--config", str(work / "config.yaml"), "--quiet")
                results[name] = _outputs(tree, store, env)
        finally:
            if args.work is None:
                for tree in trees.values():
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    diffs: list[str] = []
    _diff(results["before"], results["after"], "", args.tol, diffs,
          volatile={"run_id", "created_at", "started_at", "finished_at", "code_version", "wall_s", "mlflow_run_id",
                    "report", "spec_path", "duration_s"})
    n_targets = len(results["after"]["targets"])
    print(f"{args.before} vs {args.after}: {args.patients} patients, seed {args.seed}: "
          f"{n_targets} ranked targets compared, {len(diffs)} difference(s) beyond {args.tol:g}")
    for d in diffs[:50]:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
