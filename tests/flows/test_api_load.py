"""`fusionrx serve --workers 2` in its own process group on loopback: the read-only guarantee while runs swap
the results DB underneath (a bounded request loop during repeated swaps: zero 5xx, every answer whole, the
new runs seen), one access log shared by the workers without any identifier in it or in the server's output,
and nothing left running after SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter

import httpx
import pandas as pd

from flows.results.db import db_path, write_run
from flows.serving.serve import ServerProcess
from tests.flows.test_queries import GEFITINIB, store  # noqa: F401 - the hand-built store fixture

SWAPS = 12
SEEN_WAIT_S = 5.0
PATIENT = "TCGA-AB-1234"
ROUTES = ["/api/targets?top=3", "/api/targets/G1", "/api/evidence-types", "/api/experiments",
          f"/api/compounds/similar?smiles={GEFITINIB}&top=2", "/api/targets?top=2&weights=copy_number:1"]


def _swap_runs(root, rows, scoring, n: int, done: threading.Event, errors: list, seen: Counter) -> None:
    """n runs written one after another with write_run, the pipeline's atomic swap of the results DB; after
    each, up to SEEN_WAIT_S for a client to be answered from it (requests and swaps interleave however loaded
    the machine; a server that kept answering an older run shows as runs never seen)."""
    from flows.stages.evidence import score_targets

    try:
        for k in range(n):
            ranked = score_targets(rows, scoring)
            run = {"run_id": f"swap{k:02d}", "cohort": "test", "started_utc": f"2026-02-01T00:{k:02d}:00",
                   "finished_utc": f"2026-02-01T00:{k:02d}:30", "catalog": "c.yaml", "config": {},
                   "inputs_sha256": {}, "metrics": {}}
            exp = pd.DataFrame({"name": ["m"], "kind": ["fusion"], "strategy": ["late"], "modalities": ["ct"],
                                "task": ["t"], "metric": ["auc"], "mean": [0.5 + k / 100], "std": [0.01],
                                "n_folds": [5]})
            write_run(root, run=run, targets=ranked, compounds=pd.DataFrame(), links=pd.DataFrame(),
                      experiments=exp, evidence=rows, scoring=scoring.to_dict())
            t_end = time.monotonic() + SEEN_WAIT_S
            while not seen[run["run_id"]] and time.monotonic() < t_end:
                time.sleep(0.01)
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)
    finally:
        done.set()


def _request_loop(url: str, done: threading.Event, seen: Counter, statuses: Counter, max_s: float,
                  order: list) -> None:
    """GET the routes round-robin until the swaps are done (bounded by max_s); every answer must be JSON.
    ``order``: the run ids this client was answered from, in the order of its requests."""
    t_end = time.monotonic() + max_s
    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while time.monotonic() < t_end and not (done.is_set() and i >= 3 * len(ROUTES)):
            r = c.get(ROUTES[i % len(ROUTES)])
            statuses[r.status_code] += 1
            if r.status_code == 200 and isinstance(r.json(), dict) and "run_id" in r.json():
                seen[r.json()["run_id"]] += 1
                order.append(r.json()["run_id"])
            i += 1


def test_zero_5xx_while_runs_swap_the_db_underneath(store, tmp_path):  # noqa: F811
    root = tmp_path / "store"
    root.mkdir()
    shutil.copyfile(db_path(store["root"]), db_path(root))
    done, errors, seen, statuses = threading.Event(), [], Counter(), Counter()
    orders: list[list[str]] = [[] for _ in range(4)]
    with ServerProcess(root, workers=2, access_log=tmp_path / "access.log") as srv:
        clients = [threading.Thread(target=_request_loop, args=(srv.url, done, seen, statuses, 120, order))
                   for order in orders]
        for t in clients:
            t.start()
        _swap_runs(root, store["rows"], store["scoring"], SWAPS, done, errors, seen)
        for t in clients:
            t.join()
        final = httpx.get(srv.url + "/api/targets", params={"top": 1}).json()
    assert not errors, errors
    assert sum(statuses.values()) >= 50 and set(statuses) == {200}, statuses  # no 5xx, no 4xx either
    assert final["run_id"] == f"swap{SWAPS - 1:02d}"       # the last run is what the server answers after
    assert len(seen) >= 3, seen                           # and runs in between were answered while swapping
    for order in orders:  # a client never goes back to an older run, whichever worker answers it
        assert order == sorted(order), order                # 'r1' (the copied DB) sorts before 'swapNN'
    log = [json.loads(x) for x in (tmp_path / "access.log").read_text().splitlines()]
    api = [x for x in log if x["route"].startswith("/api/")]  # the rest: the start-up probe of /openapi.json
    assert len(api) == sum(statuses.values()) + 1 and {x["status"] for x in log} == {200}  # + the final request


def _group_gone(pgid: int, within_s: float) -> bool:
    """Whether no process of the group is left (an orphaned helper may take a moment to be reaped by init)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_served_processes_share_the_log_leak_nothing_and_stop_on_sigterm(store, tmp_path):  # noqa: F811
    log = tmp_path / "access.log"
    with ServerProcess(store["root"], workers=2, access_log=log) as srv:
        pgid = srv.proc.pid
        with httpx.Client(base_url=srv.url) as c:
            answers = [c.get(f"/api/targets/{PATIENT}", params={"patient": PATIENT}).status_code for _ in range(20)]
        code = srv.stop()
    assert answers == [404] * 20
    assert code == 0, srv.output
    assert _group_gone(pgid, within_s=10)  # supervisor, workers and multiprocessing's resource tracker
    text = log.read_text()
    assert PATIENT not in text and PATIENT not in srv.output and "1234" not in srv.output
    lines = [json.loads(x) for x in text.splitlines() if "/api/" in x]
    assert len(lines) == 20 and {x["route"] for x in lines} == {"/api/targets/{gene}"}
