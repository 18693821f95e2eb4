"""The run's console: one rich progress bar per stage (new / changed / reused / failed counts), quiet or verbose.

Prefect's own per-task log lines are silenced by ``quiet_prefect_env`` (called by the CLI and the test
configuration before Prefect is imported); ``--verbose`` lets them through.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

VERBOSITIES = ("quiet", "normal", "verbose")
STATUSES = ("new", "changed", "reused", "failed")


def quiet_prefect_env(verbosity: str = "normal") -> None:
    """Environment for Prefect, set before it is imported: no analytics or telemetry (nothing tries
    the network), and its log lines at WARNING unless verbose."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect 3 client-side telemetry opt-out
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    level = "INFO" if verbosity == "verbose" else "WARNING"
    os.environ["PREFECT_LOGGING_LEVEL"] = level
    os.environ["PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL"] = level


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads), of its waited-for children, and of the workers
    forked for it by its fork server (isolated readers, fusion pool workers: the server's children, which
    report their own CPU; flows.store.isolate, fusion.experiment_pool). Not the fork server's own imports."""
    t = os.times()
    forked = sum(m.worker_cpu_seconds() for m in (sys.modules.get("flows.store.isolate"),
                                                    sys.modules.get("fusion.experiment_pool")) if m is not None)
    return t.user + t.system + t.children_user + t.children_system + forked


class StageBar:
    """Progress of one stage: advance once per item with its status."""

    def __init__(self, progress: Progress | None, task_id, counts: Counter):
        self._progress, self._task, self.counts = progress, task_id, counts

    def _fields(self) -> str:
        return " ".join(f"{s} {self.counts[s]}" for s in STATUSES if self.counts[s])

    def advance(self, status: str, n: int = 1) -> None:
        """Count ``n`` items of ``status`` ('new', 'changed', 'reused' or 'failed')."""
        self.counts[status] += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n, counts=self._fields())

    def total(self, total: int) -> None:
        """Set (or correct) the number of items of the stage."""
        if self._progress is not None:
            self._progress.update(self._task, total=total)


class RunConsole:
    """Stage progress bars and short messages, at one of three verbosities."""

    def __init__(self, verbosity: str = "normal", file=None):
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity must be one of {VERBOSITIES}, got {verbosity!r}")
        self.verbosity = verbosity
        self.rich = RichConsole(file=file or sys.stderr, highlight=False)
        self.counts: dict[str, Counter] = {}
        self.timings_s: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}  # CPU seconds of this process and its finished children

    def log(self, msg: str) -> None:
        """A one-line message (hidden when quiet)."""
        if self.verbosity != "quiet":
            self.rich.print(msg, markup=False)

    def detail(self, msg: str) -> None:
        """A message shown only when verbose."""
        if self.verbosity == "verbose":
            self.rich.print(msg, markup=False)

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[StageBar]:
        """A stage with ``total`` items: a progress bar while it runs; its time is recorded."""
        counts = self.counts.setdefault(name, Counter())
        t0, c0 = time.perf_counter(), cpu_seconds()
        if self.verbosity == "quiet":
            yield StageBar(None, None, counts)
        else:
            progress = Progress(TextColumn(f"{name:<16}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                console=self.rich, transient=False)
            with progress:
                task_id = progress.add_task(name, total=total, counts="")
                yield StageBar(progress, task_id, counts)
        self.timings_s[name] = self.timings_s.get(name, 0.0) + time.perf_counter() - t0
        self.cpu_s[name] = self.cpu_s.get(name, 0.0) + cpu_seconds() - c0

    def count(self, name: str, status: str, n: int = 1, seconds: float = 0.0) -> None:
        """Count items of a sub-stage that has no bar of its own (a cohort model; its seconds are also
        part of its parent stage's)."""
        self.counts.setdefault(name, Counter())[status] += n
        self.timings_s[name] = self.timings_s.get(name, 0.0) + seconds

    def summary_rows(self) -> list[dict]:
        """Per stage: seconds and the new / changed / reused / failed counts."""
        names = list(dict.fromkeys([*self.timings_s, *self.counts]))
        return [{"stage": n, "seconds": round(self.timings_s.get(n, 0.0), 2),
                 "cpu_s": round(self.cpu_s.get(n, 0.0), 2),
                 **{s: int(self.counts.get(n, Counter())[s]) for s in STATUSES}} for n in names]
