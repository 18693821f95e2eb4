"""One pipeline run per store: an OS-level lock (fcntl.flock) on ``<store>/.run.lock``.

The kernel releases a flock when its holder dies, SIGKILL included, so a killed run never leaves a
stale lock behind; the file's text (pid, host, start time) only serves the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from fusion.errors import StoreBusyError

LOCK_NAME = ".run.lock"


def _holder(fh) -> dict:
    fh.seek(0)
    try:
        return json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        return {}


@contextmanager
def run_lock(store_root: str | Path, run_id: str = "") -> Iterator[dict]:
    """Hold the store's run lock for the block; StoreBusyError naming the holder when another run has it."""
    root = Path(store_root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fh)
            raise StoreBusyError(
                f"{path}: store is in use by another run (pid {h.get('pid', '?')} on host "
                f"{h.get('host', '?')}, started {h.get('started_utc', '?')}, run {h.get('run_id', '?')}); "
                "wait for it to finish or use another --store") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_id": run_id}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(info))
        fh.flush()
        yield info
    finally:
        fh.close()  # closing the descriptor releases the flock
