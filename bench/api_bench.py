"""HTTP API latency under concurrent clients: 20 threads querying `fusionrx serve` (uvicorn, one process)
on a generated results DB, beside the same queries called in-process (the baseline without HTTP).

    PYTHONPATH=$PWD python bench/api_bench.py [--genes 20000] [--compounds 10000] [--clients 20] [--requests 25]

Each client sends a mix: top-50 with random custom weights (70%), one target's explanation (20%), a
similarity search (10%). Prints p50 / p95 / p99 latency and throughput; writes bench/api_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
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

GEFITINIB = "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1"


def _requests(rng: np.random.Generator, n: int, n_genes: int) -> list[tuple[str, dict]]:
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


def _serve(store: Path):
    import uvicorn

    from flows.serving.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--compounds", type=int, default=10000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=25, help="per client")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "api_bench.json")
    args = p.parse_args()
    import httpx

    from flows.results.queries import explain_target, ranked_targets, similar_compounds

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        build_store(store, args.genes, args.compounds)
        plan = [_requests(np.random.default_rng(i), args.requests, args.genes) for i in range(args.clients)]
        # baseline: the same query functions in-process, one after another (no HTTP, no concurrency)
        direct = []
        for path, params in plan[0]:
            t = time.perf_counter()
            if path == "/api/targets":
                w = {k: float(v) for k, v in (x.split(":") for x in params["weights"].split(","))}
                ranked_targets(store, top=50, weights=w)
            elif path.startswith("/api/targets/"):
                explain_target(store, path.rsplit("/", 1)[1])
            else:
                similar_compounds(store, params["smiles"], top=10)
            direct.append((time.perf_counter() - t) * 1e3)
        server, thread, base = _serve(store)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(reqs):
            with httpx.Client(base_url=base, timeout=60) as c:
                for path, params in reqs:
                    t = time.perf_counter()
                    r = c.get(path, params=params)
                    ms = (time.perf_counter() - t) * 1e3
                    with lock:
                        lat.append(ms)
                        if r.status_code != 200:
                            errors.append(f"{path}: {r.status_code}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(reqs,)) for reqs in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server.should_exit = True
        thread.join(timeout=10)
    out = {"genes": args.genes, "compounds": args.compounds, "clients": args.clients,
           "requests": len(lat), "errors": errors[:10], "n_errors": len(errors),
           "http_p50_ms": _pct(lat, 50), "http_p95_ms": _pct(lat, 95), "http_p99_ms": _pct(lat, 99),
           "throughput_rps": len(lat) / wall, "direct_median_ms": statistics.median(direct),
           "direct_p95_ms": _pct(direct, 95), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    print(f"{args.clients} clients x {args.requests} requests on {args.genes} genes x {args.compounds} compounds: "
          f"p50 {out['http_p50_ms']:.1f} ms, p95 {out['http_p95_ms']:.1f} ms, p99 {out['http_p99_ms']:.1f} ms, "
          f"{out['throughput_rps']:.1f} requests/s, {len(errors)} errors")
    print(f"baseline, the same queries in-process one at a time: median {out['direct_median_ms']:.1f} ms, "
          f"p95 {out['direct_p95_ms']:.1f} ms (load average {out['load_average']:.1f})")
    args.out.write_text(json.dumps(out, indent=1))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
