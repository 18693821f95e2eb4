"""Resume: a run killed with SIGKILL mid-stage and started again completes with the results of an
uninterrupted run and redoes nothing that had completed (and leaves no process behind: its Prefect server
child dies with it); the results DB survives a kill mid-write."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import psutil
import pytest

from tests.flows.rankings import assert_same_ranking
from tests.flows.test_process_cleanup import assert_all_gone, cmdline

pytestmark = pytest.mark.slow  # runs killed and resumed as subprocesses


ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}  # its own server child
    if home is not None:  # the child's Prefect database in the test's temp dir
        env["PREFECT_HOME"] = str(home)
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _done_radiology(store: Path) -> set[str]:
    """Radiology artifacts recorded in the store's manifest (each one renamed into place before)."""
    if not (store / "manifest.parquet").exists():
        return set()
    rows = pd.read_parquet(store / "manifest.parquet", columns=["artifact"])["artifact"]
    return {a for a in rows if a.startswith("imaging/radiology/")}


def test_sigkill_mid_stage_then_rerun_gives_identical_results(tiny_run, tiny_cohort, tiny_config, tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "flows", "run", "--catalog", str(tiny_cohort["catalog"]),
                             "--store", str(store), "--config", str(tiny_config), "--quiet"],
                            env=_env(tmp_path / "prefect-home"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_done_radiology(store)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the marker: the radiology stage has recorded 3 of its 11 patients
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    servers = [c for c in children if "uvicorn" in cmdline(c)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert servers, "the run had no Prefect server child"
    assert_all_gone(children)  # the server (and any worker) died with the run
    done = _done_radiology(store)
    assert 3 <= len(done) < 11, f"the kill did not land mid-stage ({len(done)} patients recorded)"
    mtimes = {a: (store / a / "result.json").stat().st_mtime_ns for a in done}

    from flows.pipeline import run_pipeline

    summary = run_pipeline(tiny_cohort["catalog"], store, config_path=tiny_config, verbosity="quiet")
    rad = next(r for r in summary["counts"] if r["stage"] == "radiology")
    assert rad["reused"] == len(done) and rad["new"] == 11 - len(done) and rad["failed"] == 0
    assert all((store / a / "result.json").stat().st_mtime_ns == m for a, m in mtimes.items())
    # same scores for every gene (to 1e-9) and the same order wherever scores are not tied within that
    assert_same_ranking(pd.read_parquet(store / "targets" / "ranking.parquet"), tiny_run["ranking"])
    pd.testing.assert_frame_equal(pd.read_parquet(store / "metrics" / "experiments.parquet"),
                                  tiny_run["experiments"])


KILL_DURING_WRITE = """
import pickle, sys, time
import flows.results.db as db

real_connect = db.duckdb.connect

class SlowConnection:
    def __init__(self, con):
        self.con = con
    def __getattr__(self, name):
        return getattr(self.con, name)
    def execute(self, sql, *a):
        out = self.con.execute(sql, *a)
        if sql.startswith("INSERT INTO experiments"):
            print("writing", flush=True)
            time.sleep(120)
        return out

db.duckdb.connect = lambda *a, **k: SlowConnection(real_connect(*a, **k))
with open(sys.argv[2], "rb") as fh:
    db.write_run(sys.argv[1], **pickle.load(fh))
"""


def run_rows(run_id: str, n: int) -> dict:
    """A small run record with n targets and n experiments (values computed from the index)."""
    targets = pd.DataFrame({"gene": [f"G{i}" for i in range(n)], "rank": range(1, n + 1),
                            "score": [1.0 - i / n for i in range(n)]})
    exps = pd.DataFrame({"name": [f"e{i}" for i in range(n)], "kind": "fusion", "strategy": "early",
                         "modalities": "a+b", "task": "t", "metric": "auc", "mean": 0.5, "std": 0.1, "n_folds": 2})
    run = {"run_id": run_id, "cohort": "c", "started_utc": "s", "finished_utc": run_id, "catalog": "x",
           "config": {}, "inputs_sha256": {}, "metrics": {}}
    return {"run": run, "targets": targets, "compounds": pd.DataFrame(), "links": pd.DataFrame(),
            "experiments": exps}


def test_results_db_survives_sigkill_during_the_write(tmp_path):
    from flows.results.db import write_run

    write_run(tmp_path, **run_rows("run-1", 3))
    rows = tmp_path / "run2.pkl"
    rows.write_bytes(pickle.dumps(run_rows("run-2", 5)))
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_WRITE, str(tmp_path), str(rows)],
                            env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # mid-transaction, targets of run-2 already inserted
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT run_id FROM runs").fetchall() == [("run-1",)]
        assert con.execute("SELECT count(*) FROM targets").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 3
    finally:
        con.close()
    write_run(tmp_path, **run_rows("run-2", 5))  # the next run writes normally
    con = duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM targets").fetchone()[0] == 8
    finally:
        con.close()
