"""What a `fusionrx run` pays before its flow starts: imports and the Prefect API server's start.

Baseline: Prefect's own ephemeral server (``SubprocessASGIServer().start()``, what a run without
``PREFECT_API_URL`` used before `flows/prefect_server.py`), measured in the same run as FusionRx's server
child (``LocalPrefectServer``, bound to its parent by PR_SET_PDEATHSIG), each in a fresh interpreter:

- ``import``: ``import flows.pipeline`` (torch, scanpy, Prefect, ...);
- ``server``: launch -> ``/api/health`` answers, Prefect already imported;
- ``import+server``: what the CLI pays before the flow: sequential for the baseline (Prefect starts its
  server when the flow starts, after the imports) against FusionRx's launch-then-import overlap.

``PYTHONPATH=. python bench/prefect_server_start.py [--repeats 3] [--out result.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = ("import os, time; t0 = time.perf_counter()\n"
           "from flows.console import quiet_prefect_env; quiet_prefect_env('quiet')\n"
           "def cpu(pid=None):  # user+system CPU seconds of this process, or of the server child\n"
           "    if pid is None:\n"
           "        t = os.times(); return t.user + t.system\n"
           "    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
           "    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')\n")
CHILD = {
    "import": "import flows.pipeline\nc = cpu()\n",
    "prefect_server": ("import prefect.settings\nt0 = time.perf_counter()\n"
                       "from prefect.server.api.server import SubprocessASGIServer\n"
                       "s = SubprocessASGIServer(); s.start(); c = cpu(s.server_process.pid); s.stop()\n"),
    "fusionrx_server": ("import prefect.settings\nt0 = time.perf_counter()\n"
                        "from flows.prefect_server import LocalPrefectServer\n"
                        "s = LocalPrefectServer().start(); s.wait_ready(); t1 = time.perf_counter(); c = cpu(s.proc.pid); s.stop()\n"),
    "prefect_import+server": ("import flows.pipeline\nfrom prefect.server.api.server import SubprocessASGIServer\n"
                              "s = SubprocessASGIServer(); s.start(); c = cpu() + cpu(s.server_process.pid); s.stop()\n"),
    "fusionrx_import+server": ("from flows.prefect_server import LocalPrefectServer\n"
                               "s = LocalPrefectServer().start()\nimport flows.pipeline\ns.wait_ready(); c = cpu() + cpu(s.proc.pid); s.stop()\n"),
}


def time_child(name: str) -> tuple[float, float]:
    """(wall seconds from the child's first line to the end of its snippet, server stop excluded; CPU seconds
    of the child and its server up to then)."""
    body = CHILD[name]
    if "s.stop()" in body and "t1 =" not in body:  # the server's stop is not part of its start
        body = body.replace("s.stop()", "t1 = time.perf_counter(); s.stop()")
    end = "t1" if "t1 =" in body else "time.perf_counter()"
    code = PRELUDE + body + f"print('SECONDS', {end} - t0, c)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("SECONDS")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"{name}: rc {out.returncode}: {out.stderr[-2000:]}")
    wall, cpu = line[-1].split()[1:]
    return float(wall), float(cpu)


def measure(repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each child, the variants interleaved so that load hits them alike."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in CHILD}
    for _ in range(repeats):
        for name in CHILD:
            times[name].append(time_child(name))
    return {k: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v)}
            for k, v in times.items()}


def run(quick: bool) -> list[dict]:
    """Rows for `python -m bench`: FusionRx's server start and run prelude against Prefect's ephemeral one."""
    med = measure(1 if quick else 3)
    cmd = "PYTHONPATH=. python bench/prefect_server_start.py"
    rows = [{"what": f"import flows.pipeline ({unit})", "ours": med["import"][unit], "baseline": None,
             "baseline_name": "", "ratio": None, "unit": "s", "command": cmd} for unit in ("wall_s", "cpu_s")]
    for what, ours, base in (("Prefect API server start", "fusionrx_server", "prefect_server"),
                             ("imports + server before the flow", "fusionrx_import+server", "prefect_import+server")):
        for unit in ("wall_s", "cpu_s"):
            rows.append({"what": f"{what} ({unit})", "ours": med[ours][unit], "baseline": med[base][unit],
                         "baseline_name": "Prefect 3 ephemeral server (SubprocessASGIServer)",
                         "ratio": med[ours][unit] / med[base][unit], "unit": "s", "command": cmd})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    med = measure(args.repeats)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; medians of {args.repeats}")
    for k, v in med.items():
        print(f"{k:26s} wall {v['wall_s']:6.2f} s   CPU {v['cpu_s']:6.2f} s")
    for ours, base in (("fusionrx_server", "prefect_server"), ("fusionrx_import+server", "prefect_import+server")):
        print(f"{ours} / {base}: wall {med[ours]['wall_s'] / med[base]['wall_s']:.2f}, "
              f"CPU {med[ours]['cpu_s'] / med[base]['cpu_s']:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"median": med, "repeats": args.repeats}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
