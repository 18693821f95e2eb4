"""HTTP API under load: 20 concurrent clients (a bounded asyncio/aiohttp load client on loopback) against
`fusionrx serve --workers N` in its own process group, beside the in-process single-worker figure (uvicorn in
a thread of the client's process, as the API was measured before) and the query functions called directly,
all in the same run on a generated results DB.

    PYTHONPATH=$PWD python bench/api_bench.py [--genes 20000] [--compounds 2000] [--clients 20] [--requests 100]
                                              [--workers 2,3] [--baseline TREE] [--rounds 1] [--no-in-process]

``--baseline TREE`` also serves the same store with the code of another source tree (a git worktree of the
commit before a change: `git worktree add --detach /tmp/api_base HEAD`), alternating with this tree's server
in each of ``--rounds`` rounds, so both are measured under the same machine load; ratios are against it.

Each client sends its requests one after another (closed loop): top-50 with random custom weights (70%), one
target's explanation (20%), a similarity search (10%). Prints requests/s, p50 / p95 / p99 latency and errors
per server layout, the CPU time per request of the server processes and of the client (the throughput bound
on idle cores that a loaded machine's figures hide), the machine's load (`uptime`) before and after; writes
bench/api_bench.json. The server processes are stopped (their process group) at the end, also on an error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from targets_bench import build_store  # noqa: E402

from flows.results.ranking import EVIDENCE_TYPES  # noqa: E402
from flows.serving.serve import ServerProcess, free_port  # noqa: E402
from flows.serving.security import ApiSettings  # noqa: E402

GEFITINIB = "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1"
GOALS = {"rps": 200.0, "p95_ms": 150.0}


def _requests(rng: np.random.Generator, n: int, n_genes: int) -> list[tuple[str, dict]]:
    """One client's mix: 70% top-50 with random weights, 20% one target, 10% a similarity search."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.7:
            w = ",".join(f"{t}:{v:.2f}" for t, v in zip(EVIDENCE_TYPES, rng.uniform(0.1, 1, len(EVIDENCE_TYPES))))
            out.append(("/api/targets", {"top": 50, "weights": w}))
        elif r < 0.9:
            out.append((f"/api/targets/GENE{int(rng.integers(0, n_genes)):05d}", {}))
        else:
            out.append(("/api/compounds/similar", {"smiles": GEFITINIB, "top": 10}))
    return out


async def _load(base: str, plan: list[list[tuple[str, dict]]]) -> dict:
    """Run every client's plan concurrently (one connection each); latency per request, statuses, wall time."""
    import aiohttp

    lat: list[float] = []
    errors: list[str] = []

    async def client(session: aiohttp.ClientSession, reqs: list[tuple[str, dict]]) -> None:
        for path, params in reqs:
            t = time.perf_counter()
            try:
                async with session.get(base + path, params=params) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError as exc:
                status = f"{type(exc).__name__}"
            lat.append((time.perf_counter() - t) * 1e3)
            if status != 200:
                errors.append(f"{path}: {status}")

    connector = aiohttp.TCPConnector(limit=len(plan))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, reqs) for reqs in plan))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "n_errors": len(errors), "errors": errors[:10], "wall_s": wall,
            "rps": len(lat) / wall, "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "p99_ms": _pct(lat, 99)}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _direct(store: Path, plan: list[tuple[str, dict]]) -> list[float]:
    """The same queries called in-process one after another (no HTTP, no concurrency): ms each."""
    from flows.results.queries import explain_target, ranked_targets, similar_compounds

    out = []
    for path, params in plan:
        t = time.perf_counter()
        if path == "/api/targets":
            ranked_targets(store, top=50, weights={k: float(v) for k, v in
                                                   (x.split(":") for x in params["weights"].split(","))})
        elif path.startswith("/api/targets/"):
            explain_target(store, path.rsplit("/", 1)[1])
        else:
            similar_compounds(store, params["smiles"], top=10)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _in_thread(store: Path, plan: list[list[tuple[str, dict]]], warm: list[list[tuple[str, dict]]]) -> dict:
    """The baseline: uvicorn, one worker, in a thread of this (the client's) process."""
    import uvicorn

    from flows.serving.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, ApiSettings()), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        asyncio.run(_load(f"http://127.0.0.1:{port}", warm))
        return asyncio.run(_load(f"http://127.0.0.1:{port}", plan))
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _processes(store: Path, workers: int, plan: list[list[tuple[str, dict]]], warm: list[list[tuple[str, dict]]],
               log: Path, code_root: Path | None = None) -> dict:
    """`fusionrx serve --workers N` (of ``code_root``'s source, default this tree's) in its own process group;
    stopped (the group) on the way out."""
    with ServerProcess(store, workers=workers, access_log=log, code_root=code_root) as srv:
        asyncio.run(_load(srv.url, warm))
        server0, client0 = _group_cpu_s(srv.proc.pid), time.process_time()
        out = asyncio.run(_load(srv.url, plan))
        server_s, client_s = _group_cpu_s(srv.proc.pid) - server0, time.process_time() - client0
    n = max(out["requests"], 1)
    out.update(server_cpu_ms_per_request=1e3 * server_s / n, client_cpu_ms_per_request=1e3 * client_s / n)
    return out


def _group_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (the server's workers)."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _row(name: str, r: dict, base: dict | None) -> str:
    """One table row; the ratio is requests/s against ``base`` (this tree's baseline server, else in-process)."""
    ratio = f"{r['rps'] / base['rps']:.2f}x" if base else "1.00x"
    return (f"{name:<34} {r['requests']:>8} {r['rps']:>9.1f} {ratio:>7} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['n_errors']:>6}")


def _describe(tree: Path) -> str:
    """The tree's path and commit (`git rev-parse HEAD`, with '+changes' when its working tree differs)."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return f"{tree} at {head.stdout.strip() or '?'}{'+changes' if dirty else ''}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--compounds", type=int, default=2000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=100, help="per client")
    p.add_argument("--workers", default="2,3", help="comma-separated worker counts to measure")
    p.add_argument("--baseline", type=Path, default=None,
                   help="a source tree (git worktree of another commit) whose server is measured alongside")
    p.add_argument("--rounds", type=int, default=1, help="baseline and this tree alternate this many times")
    p.add_argument("--no-in-process", action="store_true", help="skip the in-process single-worker row")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "api_bench.json")
    args = p.parse_args()
    if args.baseline is not None and not (args.baseline / "flows" / "serving" / "serve.py").is_file():
        p.error(f"--baseline {args.baseline}: not a FusionRx source tree (no flows/serving/serve.py)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: servers stopped
    load_before = _uptime()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build_store(store, args.genes, args.compounds)
        plan = [_requests(np.random.default_rng(i), args.requests, args.genes) for i in range(args.clients)]
        warm = [_requests(np.random.default_rng(1000 + i), 10, args.genes) for i in range(args.clients)]
        direct = _direct(store, plan[0])
        results = {} if args.no_in_process else {"in_process_1_worker": _in_thread(store, plan, warm)}
        for k in range(args.rounds):
            suffix = f"_round{k + 1}" if args.rounds > 1 else ""
            for n in (int(x) for x in args.workers.split(",")):
                if args.baseline is not None:
                    results[f"baseline_serve_{n}_workers{suffix}"] = _processes(
                        store, n, plan, warm, Path(tmp) / f"base{n}_{k}.log", code_root=args.baseline)
                results[f"serve_{n}_workers{suffix}"] = _processes(store, n, plan, warm,
                                                                   Path(tmp) / f"access{n}_{k}.log")
    load_after = _uptime()
    print(f"{args.clients} clients x {args.requests} requests on {args.genes} genes x {args.compounds} compounds "
          f"(after {args.clients} x 10 warm-up requests per server); goal >= {GOALS['rps']:.0f} requests/s, "
          f"p95 <= {GOALS['p95_ms']:.0f} ms, 0 errors")
    print(f"{'server':<34} {'requests':>8} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}")
    for name, r in results.items():
        base = results.get(f"baseline_{name}") or results.get("in_process_1_worker")
        print(_row(name, r, None if r is base else base))
    for name, r in results.items():
        if "server_cpu_ms_per_request" in r:  # what the machine's load does not inflate much: CPU per request
            cpu = r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"]
            print(f"{name}: CPU per request {r['server_cpu_ms_per_request']:.2f} ms server + "
                  f"{r['client_cpu_ms_per_request']:.2f} ms client = at most {1e3 * (os.cpu_count() or 1) / cpu:.0f} "
                  f"requests/s on {os.cpu_count()} idle cores")
    print(f"direct (query functions in-process, one at a time): median {statistics.median(direct):.1f} ms, "
          f"p95 {_pct(direct, 95):.1f} ms")
    print(f"load before: {load_before}\nload after:  {load_after}")
    out = {"genes": args.genes, "compounds": args.compounds, "clients": args.clients,
           "requests_per_client": args.requests, "results": results, "direct_median_ms": statistics.median(direct),
           "direct_p95_ms": _pct(direct, 95), "cpus": os.cpu_count(), "uptime_before": load_before,
           "uptime_after": load_after, "goals": GOALS,
           "baseline": None if args.baseline is None else _describe(args.baseline)}
    args.out.write_text(json.dumps(out, indent=1))
    return 0 if all(r["n_errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
