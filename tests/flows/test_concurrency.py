"""One run per store: a second run while one holds the store is refused, naming the holder; the lock
dies with its holder (SIGKILL included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from flows.commands.status import running_holder
from flows.pipeline import run_pipeline
from flows.store.run_lock import run_lock
from fusion.errors import StoreBusyError

ROOT = Path(__file__).resolve().parents[2]
HOLDER = ("import sys, time\nfrom flows.store.run_lock import run_lock\n"
          "with run_lock(sys.argv[1], 'run-held-by-test'):\n    print('locked', flush=True)\n    time.sleep(120)\n")


@pytest.fixture()
def holder(tmp_path):
    """Another process holding the run lock of a store."""
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    yield store, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_run_is_refused_naming_the_holder(holder, tiny_cohort, capsys):
    store, proc = holder
    with pytest.raises(StoreBusyError, match=rf"pid {proc.pid} on host .*started .*run-held-by-test"):
        run_pipeline(tiny_cohort["catalog"], store)
    rc = main(["run", "--catalog", str(tiny_cohort["catalog"]), "--store", str(store), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"store is in use by another run (pid {proc.pid}" in err
    assert running_holder(store)["pid"] == proc.pid
    assert not (store / "manifest.parquet").exists()  # the refused run wrote nothing


def test_a_killed_holder_releases_the_lock(holder):
    store, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert running_holder(store) is None
    with run_lock(store, "next") as info:  # the kernel dropped the dead process's flock
        assert info["pid"] == os.getpid()
