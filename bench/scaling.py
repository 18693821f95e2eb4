"""Scaling of the whole pipeline with cohort size: time and CPU per stage and peak RSS per run at 25, 50, 100
and 200 generated patients, with the per-patient cost per stage (flat = linear growth).

Usage: PYTHONPATH=. python bench/scaling.py [--patients 25 50 100 200] [--out bench/scaling.json]
Each cohort is generated, then run by ``run_pipeline`` in a child process (peak RSS = its ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from bench.childproc import run_child

GEN = """
from pathlib import Path
from flows.synthetic.cohort import CohortConfig, generate_cohort
generate_cohort(Path({data!r}), CohortConfig(n_patients={n}, seed={seed}), progress=lambda m: None)
"""
RUN = """
from flows.console import quiet_prefect_env
quiet_prefect_env("quiet")
from flows.pipeline import run_pipeline
s = run_pipeline({catalog!r}, {store!r}, verbosity="quiet")
RESULT = {{"counts": s["counts"], "wall_s": s["wall_s"]}}
"""


def scale_run(n: int, seed: int = 7) -> dict:
    """Generate an n-patient cohort and run the pipeline on it; per-stage seconds and the run's peak RSS."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fusionrx-scale{n}-"))
    try:
        gen = run_child(GEN.format(data=str(tmp / "data"), n=n, seed=seed))
        run = run_child(RUN.format(catalog=str(tmp / "data" / "data_catalog.yaml"), store=str(tmp / "store")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stages = {r["stage"]: {"seconds": r["seconds"], "cpu_s": r.get("cpu_s", 0.0)} for r in run["result"]["counts"]}
    return {"patients": n, "generate_s": round(gen["wall_s"], 1), "run_wall_s": round(run["wall_s"], 1),
            "flow_wall_s": run["result"]["wall_s"], "peak_rss_mb": round(run["peak_rss_mb"], 1), "stages": stages}


def table(results: list[dict]) -> str:
    """Stage x cohort size: seconds and seconds per patient; then wall and peak RSS per run."""
    stages = list(dict.fromkeys(s for r in results for s in r["stages"]))
    head = f"{'stage':<18}" + "".join(f"{r['patients']:>8}p s  {'s/pt':>6}" for r in results)
    lines = [head]
    for st in stages:
        cells = ""
        for r in results:
            sec = r["stages"].get(st, {}).get("seconds", 0.0)
            cells += f"{sec:>11.1f}  {sec / r['patients']:>6.2f}"
        lines.append(f"{st:<18}{cells}")
    lines.append(f"{'run wall':<18}" + "".join(f"{r['run_wall_s']:>11.1f}  {r['run_wall_s'] / r['patients']:>6.2f}"
                                              for r in results))
    lines.append(f"{'peak RSS MB':<18}" + "".join(f"{r['peak_rss_mb']:>11.0f}  {'':>6}" for r in results))
    return "\n".join(lines)


def run(quick: bool) -> list[dict]:
    """Bench rows (python -m bench): per-patient run cost at the largest size vs the smallest (ratio ~1 = linear)."""
    sizes = [10, 20] if quick else [25, 50]
    res = [scale_run(n) for n in sizes]
    small, big = res[0], res[-1]
    cmd = f"PYTHONPATH=. python bench/scaling.py --patients {' '.join(map(str, sizes))}"
    rows = [{"what": f"pipeline run, s/patient at {big['patients']} patients", "ours": big["run_wall_s"] / big["patients"],
             "baseline": small["run_wall_s"] / small["patients"],
             "baseline_name": f"s/patient at {small['patients']} patients (linear = ratio 1)",
             "ratio": (big["run_wall_s"] / big["patients"]) / (small["run_wall_s"] / small["patients"]),
             "unit": "s/patient", "command": cmd}]
    rows.append({"what": f"pipeline peak RSS at {big['patients']} patients", "ours": big["peak_rss_mb"],
                 "baseline": small["peak_rss_mb"], "baseline_name": f"peak RSS at {small['patients']} patients",
                 "ratio": big["peak_rss_mb"] / small["peak_rss_mb"], "unit": "MB", "command": cmd})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--seed", type=int, default=7, help="cohort seed (a small cohort needs >= 2 normal samples)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("scaling.json"))
    args = ap.parse_args()
    results = []
    for n in args.patients:
        t0 = time.perf_counter()
        results.append(scale_run(n, args.seed))
        print(f"[scaling] {n} patients done in {time.perf_counter() - t0:.0f} s", flush=True)
        args.out.write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
