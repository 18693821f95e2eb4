"""Crash containment: run one reader call in a worker process, so that native code dying on a damaged file
(a segfault in HDF5, scipy's sparse routines, an image codec) fails only that file, named, and the run goes on.

A reader that validates what it reads before handing it to native code is the first line; this is the
second, for whatever validation misses. The run's readers use it one worker per input, never per file: a
patient's whole radiology ingest (flows.stages.radiology.ingest_radiology), a slide's plan and tile check
(flows.stages.pathology.plan_slide), a spatial sample (flows.stages.spatial), and the scan's non-DICOM files
in batches (flows.catalog.scan). The worker is forked from a fork server started once per process
(``multiprocessing`` 'forkserver' on POSIX, 'spawn' elsewhere), never from the caller itself: the caller is
a thread pool (Prefect's task runner) and forking a threaded process is unsafe. Modules named in
``preload`` are imported once in the fork server, so each call costs a fork, not the imports (a call naming
modules the running server lacks restarts it with them). Inside a
daemonic process (a Dask worker), where multiprocessing refuses children, the call runs in a fresh
interpreter through ``subprocess`` instead (slower: the imports are paid per call; the same containment).

The value and any Python exception travel back by pickle: a reader error keeps its class and message; a
worker that dies (killed by a signal, or exits without an answer) becomes ``error(f"{what}: ...")`` with the
signal's name, an error class the caller chooses from ``fusion.errors`` (SpatialError for a spatial sample).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from fusion.errors import FusionRxError

T = TypeVar("T")
_START_LOCK = threading.Lock()
_PRELOADED: set[str] = set()  # modules asked for so far: the fork server (re)starts with all of them
_IN_FLIGHT = 0  # isolated calls between _context() and _release(): the server is never stopped under them
_WORKER_CPU = [0.0]  # CPU seconds of the answered workers (children of the fork server, not of this process)


def worker_cpu_seconds() -> float:
    """CPU seconds (user + system) of the isolated workers of this process that have answered so far. They are
    the fork server's children, so this process's ``os.times()`` never sees them; each reports its own."""
    return _WORKER_CPU[0]


def add_worker_cpu(seconds: float) -> None:
    """Count ``seconds`` of CPU a worker forked from the fork server reported (see ``worker_cpu_seconds``)."""
    with _START_LOCK:
        _WORKER_CPU[0] += seconds


def own_cpu_seconds() -> float:
    """User + system CPU seconds of the calling process (a forked worker: since its fork)."""
    import os

    t = os.times()
    return t.user + t.system


def _no_fork_server() -> bool:
    """Whether this process cannot use a fork server: a platform without one, or a daemonic process (a Dask
    worker), where multiprocessing refuses children."""
    return mp.current_process().daemon or "forkserver" not in mp.get_all_start_methods()


def _context(preload: Iterable[str]) -> mp.context.BaseContext:
    """The fork-server context, its server holding every module ``preload`` has named so far in this process.

    The fork server reads its preload list once, when it starts. A call that names modules the running server
    lacks (a scan's sniffers started it, then a patient's radiology ingest asks for pydicom and SimpleITK)
    would otherwise pay those imports in every worker, each call (about 1 s for scanpy, 10 s on a busy
    machine): the server is stopped then, when no isolated call is in flight, and the next call starts it
    again with the union. Returns with the caller counted in flight; ``_release()`` must follow."""
    global _IN_FLIGHT
    if "forkserver" not in mp.get_all_start_methods():
        ctx = mp.get_context("spawn")
    else:
        ctx = mp.get_context("forkserver")
    wanted = set(preload)
    with _START_LOCK:
        if ctx.get_start_method() == "forkserver" and not wanted <= _PRELOADED:
            _PRELOADED.update(wanted)
            ctx.set_forkserver_preload(sorted(_PRELOADED))
            if _IN_FLIGHT == 0:
                _stop_fork_server()
        _IN_FLIGHT += 1
    return ctx


def _release() -> None:
    """One isolated call (or server start) less in flight (see ``_context``)."""
    global _IN_FLIGHT
    with _START_LOCK:
        _IN_FLIGHT -= 1


def _stop_fork_server() -> None:
    """Stop this process's fork server if one runs (the next fork starts a new one with the current preload
    list). Workers already forked run on: they answer through their own pipes. Uses the standard library's
    ForkServer._stop (the method its own tests use); where a Python lacks it the old server simply stays."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None and hasattr(server, "_stop"):
        server._stop()


def start_fork_server(preload: Iterable[str]) -> None:
    """Start the fork server now, with ``preload`` imported in it, so that every later ``run_isolated`` call
    of this process (whatever stage makes it first) forks from a server that already holds its readers'
    modules; the server imports them while the caller goes on. Workers inherit the server's environment as
    it was when it started (thread caps included: start it after setting them). A no-op where there is no
    fork server (spawn platforms, daemonic workers) or once it runs (its modules are fixed when it starts)."""
    if _no_fork_server():
        return
    _context(preload)
    try:
        from multiprocessing import forkserver

        forkserver.ensure_running()
    finally:
        _release()


def preload_fork_server(preload: Iterable[str]) -> None:
    """Name modules for the fork server without starting it: the first ``run_isolated`` call of this process
    starts it with them (and with its own). For a run that may need no worker at all (a rerun whose inputs
    are all current), so that it never pays the readers' imports."""
    if _no_fork_server():
        return
    _context(preload)
    _release()


@contextmanager
def forked_workers(preload: Iterable[str]) -> Iterator[mp.context.BaseContext]:
    """A multiprocessing context for a pool of worker processes (``ProcessPoolExecutor(mp_context=...)``), forked
    from this process's fork server with ``preload`` imported there (the server restarts with them when it lacks
    them and no call is in flight), so that a worker costs a fork, not its imports (torch and the fusion code:
    3-4 CPU-s a spawned worker); the server is never stopped while the block runs. Like spawned workers, they
    never inherit the caller's threads. 'spawn' where there is no fork server or inside a daemonic process."""
    if _no_fork_server():
        yield mp.get_context("spawn")
        return
    ctx = _context(preload)
    try:
        yield ctx
    finally:
        _release()


def _worker(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """The worker's body: call ``fn`` and send back ("ok", value, cpu) or ("error", exception, cpu), cpu its
    own CPU seconds."""
    try:
        outcome = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        outcome = ("error", exc)
    try:
        conn.send((*outcome, own_cpu_seconds()))
    except Exception as exc:  # noqa: BLE001 - an unpicklable value or exception: its text still goes back
        conn.send(("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} (could not be sent back: "
                                         f"{type(exc).__name__}: {exc})"), own_cpu_seconds()))
    finally:
        conn.close()


def describe_exit(exitcode: int | None) -> str:
    """How a worker ended, in words: 'killed by signal SIGSEGV (11)', 'exited with status 3', 'did not exit'."""
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by signal {name} ({-exitcode})"
    return f"exited with status {exitcode}"


def _receive(proc: mp.process.BaseProcess, conn: Connection, timeout_s: float | None) -> tuple[tuple | None, bool]:
    """(the worker's ("ok" | "error", value), or None when it died or ran past ``timeout_s``; whether it was
    killed here for running past ``timeout_s``). The worker is always reaped."""
    outcome, answered = None, False
    try:
        answered = conn.poll(timeout_s)
        if answered:
            outcome = conn.recv()
    except (EOFError, OSError):  # the worker died: its end of the pipe closed without an answer
        pass
    finally:
        if answered:  # it answered or died: it exits on its own
            proc.join(5.0)
        if proc.is_alive():  # ran past timeout_s, or hangs after answering
            proc.kill()
        proc.join()
    return outcome, not answered and timeout_s is not None


# the worker of _in_subprocess: unpickle (fn, args, kwargs) from argv[1], pickle the outcome to argv[2]
_CHILD = """
import pickle, sys
with open(sys.argv[1], "rb") as fh:
    fn, args, kwargs = pickle.load(fh)
try:
    outcome = ("ok", fn(*args, **kwargs))
except BaseException as exc:
    outcome = ("error", exc)
with open(sys.argv[2], "wb") as fh:
    try:
        pickle.dump(outcome, fh)
    except Exception as exc:
        fh.seek(0)
        pickle.dump(("error", RuntimeError(f"{outcome[1]!r} (could not be sent back: {exc})")), fh)
"""


def _in_subprocess(fn: Callable[..., Any], args: tuple, kwargs: dict,
                   timeout_s: float | None) -> tuple[tuple | None, bool, int | None]:
    """The same call in a fresh interpreter (``subprocess``, allowed where multiprocessing is not: inside a
    daemonic worker such as Dask's); (outcome or None, timed out, exit code)."""
    import os
    import pickle
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fusionrx-isolated-") as tmp:
        call, answer = os.path.join(tmp, "call.pkl"), os.path.join(tmp, "answer.pkl")
        with open(call, "wb") as fh:
            pickle.dump((fn, args, kwargs), fh)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            rc = subprocess.run([sys.executable, "-c", _CHILD, call, answer], env=env, timeout=timeout_s,
                                check=False).returncode
        except subprocess.TimeoutExpired:  # subprocess.run has killed it
            return None, True, None
        if rc != 0 or not os.path.exists(answer):
            return None, False, rc
        with open(answer, "rb") as fh:
            return pickle.load(fh), False, rc


def run_isolated(fn: Callable[..., T], *args: Any, what: str, error: type[FusionRxError],
                 timeout_s: float | None = None, preload: Iterable[str] = (), **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker process; its value, or its exception re-raised here.

    Args:
        fn: a module-level function (the worker imports it by name).
        what: the item the call reads (a file or folder path), first in the error message.
        error: the FusionRxError subclass raised when the worker dies or times out.
        timeout_s: seconds before a hung worker is killed and named (None: wait for ever).
        preload: modules the fork server imports once (the reader's heavy imports).

    Raises:
        ``error``: "<what>: the reader died in native code (killed by signal SIGSEGV (11)) ..." or "... did not
        answer within N s"; any exception ``fn`` raised, as it was.
    """
    forked = False  # by the fork server: not this process's child, so its CPU comes back with its answer
    if mp.current_process().daemon:  # a Dask worker process: multiprocessing refuses children there
        outcome, timed_out, exitcode = _in_subprocess(fn, args, kwargs, timeout_s)
    else:
        ctx = _context(preload)
        forked = ctx.get_start_method() == "forkserver"
        try:
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(child, fn, args, kwargs), daemon=True,
                               name=f"isolated:{getattr(fn, '__qualname__', fn)}")
            proc.start()
        finally:
            _release()  # forked: a server restart no longer concerns this call
        child.close()  # the parent keeps only its end: EOF as soon as the worker dies
        try:
            outcome, timed_out = _receive(proc, parent, timeout_s)
        finally:
            parent.close()
        exitcode = proc.exitcode
    if outcome is None:
        how = describe_exit(exitcode)
        if timed_out:
            raise error(f"{what}: the reader did not answer within {timeout_s:g} s (worker killed); skipped")
        raise error(f"{what}: the reader died in native code ({how}) while reading it: the file is damaged "
                    f"or unreadable by {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}; skipped")
    status, value, *cpu = outcome
    if forked and cpu:
        add_worker_cpu(cpu[0])
    if status == "error":
        raise value
    return value
