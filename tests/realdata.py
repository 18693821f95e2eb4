"""Where the shared real public test files are (../shared/realdata from the project root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def realdata_dir() -> Path:
    """../shared/realdata; skips when absent, except under CI=true where its absence fails the test."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata").resolve()
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: the real-data tests must run under CI")
        pytest.skip(f"real public test files not found at {path}")
    return path
