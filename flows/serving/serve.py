"""Run the API server: uvicorn with one or several worker processes over one store's results DB.

Each worker is a separate process (uvicorn's supervisor spawns them and stops them on SIGINT/SIGTERM), so
concurrent queries run on several cores instead of queueing behind one Python interpreter. The workers are
configured through the environment they inherit: the store (FUSIONRX_SERVE_STORE) and the API settings of
flows.serving.security (token, CORS origins, access-log file). uvicorn's own access log is off: it would
write each request's full path and query string; the API's access log writes the route template only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from fastapi import FastAPI

from flows.serving.security import ACCESS_LOG_ENV, ApiSettings
from fusion.errors import FusionRxError

STORE_ENV = "FUSIONRX_SERVE_STORE"
ACCESS_LOG_NAME = Path("logs") / "api-access.log"  # inside the store, unless given


def app_from_env() -> FastAPI:
    """uvicorn's app factory, called once in each worker: the store and the settings from the environment."""
    from flows.serving.api import create_app

    store = os.environ.get(STORE_ENV)
    if not store:
        raise FusionRxError(f"{STORE_ENV} is not set: start the server with `fusionrx serve --store STORE`")
    return create_app(Path(store), ApiSettings.from_env())


def serve(store: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: str | Path | None = None) -> None:
    """Serve ``store`` until SIGINT/SIGTERM with ``workers`` processes; the access log goes to ``access_log``
    (default STORE/logs/api-access.log), shared by the workers (appends, one write per line).

    Raises:
        FusionRxError: workers < 1, or the API settings in the environment are invalid (checked here, before
            any worker starts, so the error is printed once and the command fails).
    """
    import uvicorn

    if workers < 1:
        raise FusionRxError(f"--workers must be >= 1, found {workers}")
    store = Path(store).resolve()
    log = Path(access_log) if access_log else store / ACCESS_LOG_NAME
    os.environ[STORE_ENV] = str(store)
    os.environ[ACCESS_LOG_ENV] = str(log.resolve())
    ApiSettings.from_env()
    log.parent.mkdir(parents=True, exist_ok=True)
    uvicorn.run("flows.serving.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`fusionrx serve` as a child process in its own process group, for benchmarks and tests: started and
    waited for on entry, the whole group (supervisor and workers) stopped on exit, also on an exception or
    Ctrl-C in the caller (SIGTERM, then SIGKILL after ``grace_s``).

        with ServerProcess(store, workers=2) as srv:
            httpx.get(srv.url + "/api/targets")
    """

    def __init__(self, store: str | Path, *, workers: int = 1, host: str = "127.0.0.1", port: int | None = None,
                 access_log: str | Path | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 120.0, grace_s: float = 10.0, code_root: str | Path | None = None) -> None:
        """``code_root``: the source tree whose FusionRx runs the server (default: this one), e.g. a git
        worktree of another commit, for a before/after benchmark in one run."""
        self.store, self.workers, self.host = Path(store), workers, host
        self.code_root = Path(code_root).resolve() if code_root else Path(__file__).resolve().parents[2]
        self.port = port or free_port(host)
        self.access_log, self.env = access_log, env
        self.startup_timeout_s, self.grace_s = startup_timeout_s, grace_s
        self.proc: subprocess.Popen | None = None
        self.output: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "flows", "serve", "--store", str(self.store.resolve()), "--host", self.host,
               "--port", str(self.port), "--workers", str(self.workers)]
        if self.access_log:
            cmd += ["--access-log", str(Path(self.access_log).resolve())]
        self._out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(self.env or {})}, cwd=self.code_root)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until the server answers any HTTP request (a 401 in token mode counts), or fail with its output."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FusionRxError(f"`fusionrx serve` exited with {self.proc.returncode}: {self._read_output()}")
            try:
                urllib.request.urlopen(self.url + "/openapi.json", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise FusionRxError(f"`fusionrx serve` did not answer within {self.startup_timeout_s:.0f} s: "
                            f"{self._read_output()}")

    def _read_output(self) -> str:
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL to what is left after the grace period; the exit code (a second
        call returns it again)."""
        if self.proc is None or self.proc.returncode is not None and self._out.closed:
            return None if self.proc is None else self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers, or a supervisor that did not stop
        except ProcessLookupError:
            pass
        code = self.proc.wait()
        self.output = self._read_output()
        self._out.close()
        return code

    def __exit__(self, *exc: object) -> None:
        self.stop()
