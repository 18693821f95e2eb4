"""Run a Python snippet in a child process and measure its wall time and peak RSS (ru_maxrss via wait4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(code: str, timeout_s: float = 3600.0) -> dict:
    """Run ``code`` (which may set ``RESULT = {...}``) in a fresh interpreter; {'wall_s', 'peak_rss_mb', 'result'}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = f"{code}\nimport json as _j\n_j.dump(globals().get('RESULT', {{}}), open({str(out)!r}, 'w'), default=str)\n"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"child process failed (rc {proc.returncode}):\n{err[-3000:]}")
        result = json.loads(out.read_text()) if out.exists() else {}
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "result": result}
