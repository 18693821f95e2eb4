"""The Prefect API server of one FusionRx process: a child that dies with its parent.

Without a configured Prefect API (``PREFECT_API_URL`` unset), Prefect 3 starts its own ephemeral server as a
plain subprocess and stops it at interpreter exit; a process that dies without exiting (``kill -9``, a
segfault in native code) leaves that server running for ever. Here the server is started by FusionRx
instead, through a tiny launcher that asks the Linux kernel to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``) and then ``exec``s the server, in its own session so that
a Ctrl-C at the terminal reaches only FusionRx, which stops the server last (after Prefect's log and event
workers have drained into it). Elsewhere than Linux the server is still stopped at every ordinary exit, but a
killed parent leaves it behind.

PR_SET_PDEATHSIG fires when the *thread* that started the child exits: start servers from the main thread
(the CLI does) or from a thread that outlives them.

This module imports only the standard library and ``fusion.errors``; Prefect is imported inside functions.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from fusion.errors import FusionRxError

# prctl(PR_SET_PDEATHSIG, SIGKILL), then check the parent is still the one that started us (it may have died
# before the prctl), then become the server. Run with `python -c`, so it imports nothing of FusionRx.
_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
PDEATHSIG = sys.platform.startswith("linux")
ADDRESS_IN_USE = 3  # uvicorn's exit status when it cannot bind its port


def spawn_bound_to_parent(argv: list[str], env: dict[str, str], **popen_kw) -> subprocess.Popen:
    """Start ``python argv...`` as a child in its own session that the kernel kills when this process dies
    (Linux); elsewhere a plain child in its own session."""
    cmd = ([sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv] if PDEATHSIG
           else [sys.executable, *argv])
    return subprocess.Popen(cmd, env=env, start_new_session=True, **popen_kw)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server retries another if it is taken in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPrefectServer:
    """A Prefect API server on 127.0.0.1 run as a child of this process (see the module docstring).

    ``ui=False`` is the run's server: the API with the services of Prefect's own ephemeral server, no UI.
    ``ui=True`` is ``prefect server start`` (UI, schedulers and every service), for ``fusionrx schedule``.
    """

    def __init__(self, port: int | None = None, ui: bool = False):
        self.fixed_port, self.ui = port, ui
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _argv(self) -> list[str]:
        if self.ui:
            return ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        import prefect

        return ["-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on"]

    def _env(self) -> dict[str, str]:
        from prefect.settings import get_current_settings

        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               **get_current_settings().to_environment_variables(exclude_unset=True)}
        env.pop("PREFECT_API_URL", None)
        if not self.ui:  # what Prefect's ephemeral server sets: no UI, only the ephemeral-server services; and
            # no block-type registration at start (about 0.6 CPU-s of collection imports per run, on the run's
            # critical path: the run uses no blocks, and a client saving one registers its type)
            env.update({"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
                        "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
                        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"})
        return env

    def start(self) -> "LocalPrefectServer":
        """Launch the server (returns at once; ``wait_ready`` waits for it to answer)."""
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if self.ui else {"stdout": subprocess.DEVNULL}
        self.proc = spawn_bound_to_parent(self._argv(), self._env(), **quiet)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> str:
        """Wait until ``/api/health`` answers 200 (a taken port: another port, when none was asked for);
        the API URL."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None:
                if code == ADDRESS_IN_USE and self.fixed_port is None:
                    self.port = free_port()
                    self.start()
                    continue
                raise FusionRxError(f"the local Prefect server on port {self.port} exited with status {code}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.api_url
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise FusionRxError(f"the local Prefect server did not answer {self.api_url}/health within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout_s``; waits for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "LocalPrefectServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server is its session's (and group's) leader
    except (ProcessLookupError, PermissionError):
        pass


def configured_api_url() -> str | None:
    """The Prefect API URL from the environment, profile or an active settings context (None: none set)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def point_prefect_at(url: str | None) -> None:
    """Make every later Prefect client (in any thread) use ``url`` (None: unset)."""
    from prefect.context import refresh_global_settings_context

    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def drain_prefect_workers() -> None:
    """Send Prefect's buffered log lines and events now, while the server still answers."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        import inspect

        for result in (APILogWorker.instance().drain(), EventsWorker.drain_all()):
            if inspect.isawaitable(result):
                await result

    try:
        run_coro_as_sync(drain())
    except RuntimeError:  # a worker that never started
        pass


@contextmanager
def prefect_api(timeout_s: float = 180.0) -> Iterator[Callable[[], str]]:
    """The Prefect API for the duration: the configured one, else a local server child started now.

    Yields ``ready()``: call it before the first Prefect call (after the slow imports, which overlap the
    server's start); it waits for the server and points Prefect at it. On exit Prefect's log and event
    workers are drained and the server is stopped.
    """
    url = configured_api_url()
    if url:
        yield lambda: url
        return
    server = LocalPrefectServer().start()
    pointed = False

    def ready() -> str:
        nonlocal pointed
        api = server.wait_ready(timeout_s)
        point_prefect_at(api)
        pointed = True
        return api

    try:
        yield ready
    finally:
        if pointed:
            drain_prefect_workers()
            point_prefect_at(None)
        server.stop()


def descendants(pid: int | None = None) -> list[int]:
    """Process ids of every living descendant of ``pid`` (default: this process), from ``/proc`` (Linux)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every descendant of this process (a stop that must leave no child); their pids."""
    pids = descendants()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return pids
