"""`fusionrx schedule`: serve the pipeline as a Prefect deployment on a cron schedule.

Default (embedded): when no Prefect API is configured (``PREFECT_API_URL`` unset), a local Prefect server
(UI and API) is started as a child process bound to this one (`flows/prefect_server.py`: it dies with it,
even on SIGKILL), and the scheduled runs are served from this process. With ``--work-pool`` the deployment
is registered on an existing server's work pool instead (a `prefect worker` then runs it; see
docs/operations.md "Schedules").

SIGTERM (how service managers stop it) and SIGINT (Ctrl-C) stop it cleanly: the runner cancels a run in
flight and pauses the schedule, the server is stopped last, no child process is left, exit status 0. If that
has not finished within ``STOP_GRACE_S`` (or on a second signal), every child is killed and it exits
128 + the signal's number (143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fusion.errors import FusionRxError

STOP_GRACE_S = 20.0


def deployment_parameters(args: argparse.Namespace) -> dict:
    """Flow parameters of the scheduled runs (absolute paths: the runs may start elsewhere)."""
    return {"catalog_path": str(Path(args.catalog).resolve()), "store_path": str(Path(args.store).resolve()),
            "config_path": str(Path(args.config).resolve()) if args.config else None, "verbosity": "quiet"}


def build_deployment(args: argparse.Namespace):
    """The runner deployment of the pipeline with the cron schedule (not yet served)."""
    from flows.pipeline import fusionrx_pipeline

    return fusionrx_pipeline.to_deployment(name=args.name, cron=args.cron, parameters=deployment_parameters(args),
                                           description=f"FusionRx pipeline over {args.catalog} into {args.store}")


def _say(line: str) -> None:
    """One line on stderr from a signal handler (os.write: no buffered stream to re-enter)."""
    os.write(sys.stderr.fileno(), (line + "\n").encode())


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGINT before the runner serves: unwinds like Ctrl-C (the server is stopped on the way)."""


class Stopper:
    """What SIGTERM and SIGINT do: the first asks the runner for a graceful stop (or unwinds, before it
    serves) and arms a watchdog; the watchdog, or a second signal, kills every child and exits 128 + signal."""

    def __init__(self, grace_s: float = STOP_GRACE_S):
        self.grace_s = grace_s
        self.signum: int | None = None
        self.runner: Any = None  # the serving prefect Runner, once created

    def request(self, signum: int, frame=None) -> None:
        """The signal handler."""
        if self.signum is not None:
            self.force()
        self.signum = signum
        _say(f"[schedule] {signal.Signals(signum).name}: stopping")
        timer = threading.Timer(self.grace_s, self.force)
        timer.daemon = True
        timer.start()
        if self.runner is None:
            raise StopRequested()
        from prefect.runner import Runner

        Runner.handle_sigterm(self.runner)  # cancels runs in flight, stops polling; not started: SystemExit(0)

    def force(self) -> None:
        """Kill every child (server, flow runs) and exit now."""
        from flows.prefect_server import kill_descendants

        signum = self.signum or signal.SIGTERM
        _say(f"[schedule] not stopped within {self.grace_s:.0f} s: killing its processes")
        kill_descendants()
        os._exit(128 + signum)

    @contextmanager
    def installed(self) -> Iterator["Stopper"]:
        """SIGTERM and SIGINT handled by ``request`` while inside (the previous handlers restored after)."""
        previous = {s: signal.signal(s, self.request) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def serve_until_stopped(deployment, stopper: Stopper) -> None:
    """Serve ``deployment`` (as ``prefect.serve`` does) until ``stopper`` is asked to stop."""
    from prefect.runner import Runner

    class StoppableRunner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:  # installed by Runner.start for SIGTERM
            stopper.request(signal.SIGTERM)

    runner = StoppableRunner(pause_on_shutdown=True)
    runner.add_deployment(deployment)
    stopper.runner = runner
    asyncio.run(runner.start())


def _embedded_server(port: int):
    """Start the local Prefect server (UI and API) on ``port`` and point Prefect at it."""
    from flows.prefect_server import LocalPrefectServer, point_prefect_at

    server = LocalPrefectServer(port=port, ui=True).start()
    try:
        point_prefect_at(server.wait_ready())
    except FusionRxError as exc:
        server.stop()
        raise FusionRxError(f"{exc} (is port {port} in use? choose another with --port)") from exc
    print(f"[schedule] local Prefect server at http://127.0.0.1:{port} (UI and API)", flush=True)
    return server


def _deploy_to_pool(args: argparse.Namespace) -> None:
    from flows.config import PROJECT_ROOT
    from flows.pipeline import fusionrx_pipeline

    flow = fusionrx_pipeline.from_source(source=str(PROJECT_ROOT), entrypoint="flows/pipeline.py:fusionrx_pipeline")
    flow.deploy(name=args.name, work_pool_name=args.work_pool, cron=args.cron, parameters=deployment_parameters(args))
    print(f"[schedule] deployment '{args.name}' on work pool '{args.work_pool}' with cron '{args.cron}'; "
          f"run `prefect worker start --pool {args.work_pool}` to execute it")


def _cmd_schedule(args: argparse.Namespace) -> int:
    from flows.catalog.schema import load_catalog
    from flows.config import load_run_config
    from flows.console import quiet_prefect_env

    load_catalog(args.catalog)
    load_run_config(args.config)
    quiet_prefect_env("normal")
    from flows.prefect_server import configured_api_url, drain_prefect_workers, kill_descendants

    server = None
    with Stopper().installed() as stopper:
        try:
            server = None if configured_api_url() else _embedded_server(args.port)
            if args.work_pool:
                _deploy_to_pool(args)
                return 0
            print(f"[schedule] serving '{args.name}' with cron '{args.cron}' (Ctrl-C or SIGTERM to stop)", flush=True)
            serve_until_stopped(build_deployment(args), stopper)
        except StopRequested:
            pass  # a stop asked for before the runner served
        except SystemExit:
            if stopper.signum is None:
                raise
            # Runner.handle_sigterm exits this way when the runner had not started yet
        finally:
            if server is not None:
                drain_prefect_workers()
                server.stop()
            kill_descendants()  # a flow run the runner did not stop
        if stopper.signum is not None:
            print(f"[schedule] stopped ({signal.Signals(stopper.signum).name})", flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx schedule`."""
    s = sub.add_parser("schedule", help="serve the pipeline on a cron schedule (Prefect deployment)")
    s.add_argument("--catalog", required=True, type=Path)
    s.add_argument("--store", required=True, type=Path)
    s.add_argument("--config", type=Path, default=None, help="YAML overrides of the run config")
    s.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (02:00 every day)')
    s.add_argument("--name", default="fusionrx-scheduled", help="deployment name")
    s.add_argument("--work-pool", default=None, help="register on this work pool of a running server "
                                                      "instead of serving in this process")
    s.add_argument("--port", type=int, default=4200, help="port of the embedded local Prefect server")
    s.set_defaults(func=_cmd_schedule)
