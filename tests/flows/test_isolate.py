"""Crash containment (flows.store.isolate): a reader that dies in native code fails its own file, named, and
the calls after it go on: a deliberate segfault and abort, a hung reader, and a real segfault of
scanpy.read_10x_h5 on a Space Ranger matrix whose index arrays were overwritten (issue 18's crash)."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from flows.store.isolate import describe_exit, run_isolated
from fusion.errors import OmicsFormatError, SpatialError
from tests.realdata import realdata_dir


# module-level: the worker imports them by name
def segfault(path: str) -> None:
    """Dereference NULL: SIGSEGV in native code."""
    ctypes.string_at(0)


def abort(path: str) -> None:
    os.abort()


def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


def checked_read(path: str) -> dict:
    """A reader that answers: a value (a dict of arrays) or a FusionRx error."""
    if path.endswith(".bad"):
        raise OmicsFormatError(f"{path}: column 'x' holds 'y'")
    return {"path": path, "values": np.arange(5) * 2}


def modules_loaded(names: list[str]) -> dict[str, bool]:
    """Which of ``names`` this worker holds: stdlib modules nothing here imports, so only the fork server's
    preload puts them there."""
    return {n: n in sys.modules for n in names}


def answer_after(started: str, seconds: float, value: int) -> int:
    """Touch ``started``, wait ``seconds``, answer ``value``."""
    open(started, "w").close()
    time.sleep(seconds)
    return value


def burn_cpu(seconds: float) -> float:
    """Spin for ``seconds`` of this process's CPU time; the CPU time it measured."""
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        pass
    return time.process_time() - t0


def read_10x_unchecked(path: str):
    """scanpy's reader on the file as it is, without omics.spaceranger's index checks."""
    import scanpy as sc

    return sc.read_10x_h5(path)


def test_a_native_crash_fails_only_its_item_named():
    with pytest.raises(SpatialError, match=r"^/data/P1\.h5: the reader died in native code \(killed by signal "
                                           r"SIGSEGV \(11\)\)"):
        run_isolated(segfault, "/data/P1.h5", what="/data/P1.h5", error=SpatialError)
    with pytest.raises(SpatialError, match=r"^/data/P2\.h5: .*SIGABRT"):
        run_isolated(abort, "/data/P2.h5", what="/data/P2.h5", error=SpatialError)
    # the caller goes on: the next item is read, its value and its own error come back as they were
    value = run_isolated(checked_read, "/data/P3.h5", what="/data/P3.h5", error=SpatialError)
    assert value["path"] == "/data/P3.h5" and value["values"].tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(OmicsFormatError, match=r"^/data/P4\.bad: column 'x' holds 'y'$"):
        run_isolated(checked_read, "/data/P4.bad", what="/data/P4.bad", error=SpatialError)


def _in_daemon(queue) -> None:
    """In a daemonic process (as in a Dask worker): a crash, then a good call; what came back, queued."""
    try:
        run_isolated(segfault, "/data/P6.h5", what="/data/P6.h5", error=SpatialError)
        queue.put("no error")
    except SpatialError as exc:
        queue.put(str(exc))
    queue.put(run_isolated(checked_read, "/data/P7.h5", what="/data/P7.h5", error=SpatialError)["values"].tolist())


def test_inside_a_daemonic_worker_the_call_runs_in_a_subprocess():
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_daemon, args=(queue,), daemon=True)
    proc.start()
    try:
        crashed, values = queue.get(timeout=120), queue.get(timeout=120)
    finally:
        proc.join(30)
    assert crashed.startswith("/data/P6.h5: the reader died in native code (killed by signal SIGSEGV (11))")
    assert values == [0, 2, 4, 6, 8] and proc.exitcode == 0


def test_a_hung_reader_is_killed_and_named():
    t0 = time.perf_counter()
    with pytest.raises(SpatialError, match=r"^/data/P5\.h5: the reader did not answer within 1 s"):
        run_isolated(sleep_for, 60, what="/data/P5.h5", error=SpatialError, timeout_s=1)
    assert time.perf_counter() - t0 < 30  # killed, not waited for


def test_exit_descriptions():
    assert describe_exit(-11) == "killed by signal SIGSEGV (11)"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(None) == "did not exit"


def test_a_corrupt_10x_matrix_that_segfaults_scanpy_is_contained(tmp_path):
    """The damage of issue 18: index values far outside the matrix. Read unchecked by scanpy, it segfaults
    (exit 139 of the whole run before); isolated, it is a SpatialError naming the file (the run going on after
    it: tests/flows/test_crash_containment.py)."""
    src = realdata_dir("spatial", "visium_v1_subsample")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    h5 = bad / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        idx = f["matrix/indices"][()]
        idx[len(idx) // 3: len(idx) // 3 + 50] = 10**9
        f["matrix/indices"][...] = idx
    with pytest.raises(SpatialError, match=rf"^{h5}: the reader died in native code \(killed by signal SIGSEGV"):
        run_isolated(read_10x_unchecked, str(h5), what=str(h5), error=SpatialError, preload=("scanpy",))
    # the reader the run uses checks the index arrays first: a named error without any crash
    from omics.spaceranger import read_spaceranger

    with pytest.raises(SpatialError, match=r"corrupt 10x feature-barcode matrix: matrix/indices hold values outside"):
        read_spaceranger(bad)


def test_a_call_naming_new_preload_modules_restarts_the_fork_server_without_losing_a_running_worker(tmp_path):
    """The fork server reads its preload list once; a later call that names more modules (the run's radiology
    after the scan's sniffers) gets a server restarted with them, instead of paying the imports in every worker,
    and a worker forked from the old server still answers."""
    first = run_isolated(modules_loaded, ["wave", "colorsys"], what="first", error=SpatialError, preload=("wave",))
    assert first["wave"] is True
    answers = {}
    slow = threading.Thread(target=lambda: answers.setdefault("slow", run_isolated(
        answer_after, str(tmp_path / "started"), 1.5, 42, what="slow", error=SpatialError, preload=("wave",))))
    slow.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:  # forked from the old server
        time.sleep(0.05)
    second = run_isolated(modules_loaded, ["wave", "colorsys"], what="second", error=SpatialError,
                          preload=("colorsys",))
    slow.join(30)
    assert second == {"wave": True, "colorsys": True}  # the new server holds both lists
    assert answers == {"slow": 42}


def test_named_preload_modules_reach_the_first_worker_without_an_early_server():
    """``preload_fork_server`` (a rerun that may read nothing) starts no server; the first call then forks
    from a server that holds the named modules beside its own."""
    from multiprocessing import forkserver

    from flows.store.isolate import _stop_fork_server, preload_fork_server

    _stop_fork_server()
    preload_fork_server(("sndhdr", "mailcap"))
    assert getattr(forkserver._forkserver, "_forkserver_pid", None) is None  # named, not started
    got = run_isolated(modules_loaded, ["sndhdr", "mailcap", "wave"], what="first", error=SpatialError,
                       preload=("wave",))
    assert got == {"sndhdr": True, "mailcap": True, "wave": True}


def test_a_forked_workers_cpu_is_counted_by_its_caller():
    """A worker forked by the fork server is not the caller's child, so the caller's os.times() never sees it:
    it reports its CPU with its answer, and the run's stage CPU (flows.console.cpu_seconds) includes it."""
    from flows.console import cpu_seconds
    from flows.store.isolate import worker_cpu_seconds

    before, stage_before = worker_cpu_seconds(), cpu_seconds()
    burnt = run_isolated(burn_cpu, 0.5, what="spin", error=SpatialError)
    counted = worker_cpu_seconds() - before
    assert burnt >= 0.5
    assert burnt <= counted < burnt + 0.5  # the spin plus the worker's own start and answer
    assert cpu_seconds() - stage_before >= counted - 0.011  # os.times() ticks are 10 ms
