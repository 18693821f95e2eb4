"""Processes that stop and leave nothing behind, and a run's exit status.

- `fusionrx run` killed with SIGKILL mid-flight: its Prefect server child (and any other child) is gone
  within seconds (PR_SET_PDEATHSIG, `flows/prefect_server.py`), where Prefect's own ephemeral server lived on.
- `fusionrx schedule` stops on SIGTERM and SIGINT, while serving and while still starting: exit 0, no child.
- A run that completed but skipped an input exits 3 (``EXIT_SKIPPED``), the same run with clean inputs 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.cli import EXIT_SKIPPED, main
from flows.prefect_server import free_port

pytestmark = pytest.mark.slow  # runs and schedules as subprocesses, each with its own server

ROOT = Path(__file__).resolve().parents[2]
SERVER_MARKERS = ("uvicorn", "prefect")


def child_env(tmp_path: Path) -> dict[str, str]:
    """A child's environment: no configured Prefect API (it starts its own server), its own PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PREFECT_HOME": str(tmp_path / "prefect-home")}


def cmdline(p: psutil.Process) -> str:
    """A process's command line ('' once it has exited or is a zombie)."""
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def living(procs: list[psutil.Process]) -> list[str]:
    """The processes of ``procs`` still running (zombies count as gone), as 'pid cmdline'."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {cmdline(p)[:160]}")
        except psutil.NoSuchProcess:
            pass
    return out


def assert_all_gone(procs: list[psutil.Process], within_s: float = 20.0) -> None:
    """Every process of ``procs`` exits within ``within_s`` (a bound against a hang, not a timing)."""
    deadline = time.monotonic() + within_s
    while living(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = living(procs)
    for p in procs:  # never leave one behind, even when the assertion fails
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not survivors, f"processes outlived their parent: {survivors}"


def wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen (exit {proc.poll()})")
        time.sleep(0.1)


def server_children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if any(m in cmdline(c) for m in SERVER_MARKERS)]


def test_sigkilled_run_leaves_no_prefect_server(tiny_cohort, tiny_config, tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "flows", "run", "--catalog", str(tiny_cohort["catalog"]),
                             "--store", str(store), "--config", str(tiny_config), "--quiet"],
                            env=child_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # mid-flight: the server answers and the flow has recorded its first artifact
        wait_for(lambda: (store / "manifest.parquet").exists(), 300, "the run's first artifact", proc)
        kids = psutil.Process(proc.pid).children(recursive=True)
        servers = [k for k in kids if "uvicorn" in cmdline(k)]
        assert len(servers) == 1, [cmdline(k) for k in kids]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert_all_gone(kids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def schedule(tiny_cohort, tmp_path: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows", "schedule", "--catalog", str(tiny_cohort["catalog"]),
                             "--store", str(tmp_path / "store"), "--cron", "0 2 * * *", "--port", str(port)],
                            env=child_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def read_until(proc: subprocess.Popen, marker: str) -> list[str]:
    """Output lines up to and including the first that contains ``marker``."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"'{marker}' never printed (exit {proc.wait()}): {''.join(lines)[-3000:]}")


@pytest.mark.parametrize("sig, when", [(signal.SIGTERM, "serving"), (signal.SIGINT, "serving"),
                                       (signal.SIGTERM, "starting")])
def test_schedule_stops_on_signal_leaving_no_child(tiny_cohort, tmp_path, sig, when):
    port = free_port()
    proc = schedule(tiny_cohort, tmp_path, port)
    try:
        if when == "serving":
            read_until(proc, "serving 'fusionrx-scheduled'")
            # the runner polls the embedded server: the deployment is registered and scheduled
            wait_for(lambda: any(c.status() != psutil.STATUS_ZOMBIE for c in server_children(proc.pid)), 30,
                     "the embedded server", proc)
            time.sleep(3)
        else:
            wait_for(lambda: bool(server_children(proc.pid)), 120, "the embedded server's launch", proc)
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert kids, "no server child to check"
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)  # STOP_GRACE_S is 20 s: a hang fails here
        assert proc.returncode == 0, out[-3000:]
        if when == "serving":
            assert f"stopped ({signal.Signals(sig).name})" in out
        assert "Traceback" not in out, out[-3000:]
        assert_all_gone(kids, within_s=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def clean_compounds(data: Path) -> int:
    """Drop the generator's planted unparseable SMILES rows; how many were dropped."""
    table = data / "compounds" / "compounds.tsv"
    lines = table.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if "\tcorrupt-record-" not in ln]
    table.write_text("".join(kept))
    return len(lines) - len(kept)


def test_run_exit_status_tells_skipped_inputs_apart(tiny_cohort, tiny_config, tmp_path, prefect_harness, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_cohort["data"], data)
    assert clean_compounds(data) == 2
    slide = sorted((data / "slides").glob("*.tiff"))[0]
    good = slide.read_bytes()
    slide.write_bytes(b"<html><body>502 Bad Gateway</body></html>\n" * 40)  # one unreadable slide
    args = ["run", "--catalog", str(data / "data_catalog.yaml"), "--store", str(tmp_path / "store"),
            "--config", str(tiny_config), "--quiet"]
    assert main(args) == EXIT_SKIPPED == 3
    out = capsys.readouterr().out
    assert "1 input(s) reported and skipped (exit status 3)" in out and slide.name in out
    slide.write_bytes(good)  # the same cohort, nothing bad in it: a clean run
    assert main(args) == 0
    assert "reported and skipped" not in capsys.readouterr().out
