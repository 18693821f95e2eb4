"""`fusionrx schedule`: serve the pipeline as a Prefect deployment on a cron schedule.

Default (embedded): when no PREFECT_API_URL is configured, a local Prefect server is started as a
child process for as long as the command runs, and ``flow.serve`` runs the scheduled runs in this
process. With ``--work-pool`` the deployment is registered on an existing server's work pool instead
(a `prefect worker` then runs it; see README "Schedules").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fusion.errors import FusionRxError


def deployment_parameters(args: argparse.Namespace) -> dict:
    """Flow parameters of the scheduled runs (absolute paths: the runs may start elsewhere)."""
    return {"catalog_path": str(Path(args.catalog).resolve()), "store_path": str(Path(args.store).resolve()),
            "config_path": str(Path(args.config).resolve()) if args.config else None, "verbosity": "quiet"}


def build_deployment(args: argparse.Namespace):
    """The runner deployment of the pipeline with the cron schedule (not yet served)."""
    from flows.pipeline import fusionrx_pipeline

    return fusionrx_pipeline.to_deployment(name=args.name, cron=args.cron, parameters=deployment_parameters(args),
                                           description=f"FusionRx pipeline over {args.catalog} into {args.store}")


def start_local_server(port: int, timeout_s: float = 180.0) -> subprocess.Popen:
    """Start `prefect server start` on 127.0.0.1:port as a child process and wait until it is healthy."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FusionRxError(f"the local Prefect server on port {port} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1.0)
    proc.terminate()
    raise FusionRxError(f"the local Prefect server did not answer {url} within {timeout_s:.0f} s")


def _cmd_schedule(args: argparse.Namespace) -> int:
    from flows.catalog.schema import load_catalog
    from flows.config import load_run_config
    from flows.console import quiet_prefect_env

    load_catalog(args.catalog)
    load_run_config(args.config)
    quiet_prefect_env("normal")
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = start_local_server(args.port)
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{args.port}/api"
        print(f"[schedule] local Prefect server at http://127.0.0.1:{args.port} (UI and API)")
    try:
        if args.work_pool:
            from flows.config import PROJECT_ROOT
            from flows.pipeline import fusionrx_pipeline

            flow = fusionrx_pipeline.from_source(source=str(PROJECT_ROOT), entrypoint="flows/pipeline.py:fusionrx_pipeline")
            flow.deploy(name=args.name, work_pool_name=args.work_pool, cron=args.cron,
                        parameters=deployment_parameters(args))
            print(f"[schedule] deployment '{args.name}' on work pool '{args.work_pool}' with cron '{args.cron}'; "
                  f"run `prefect worker start --pool {args.work_pool}` to execute it")
            return 0
        from prefect import serve

        print(f"[schedule] serving '{args.name}' with cron '{args.cron}' (Ctrl-C to stop)")
        serve(build_deployment(args), print_starting_message=False)
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


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
