"""Where the shared real public test data lives (../shared/realdata from the project root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def realdata_dir() -> Path:
    """../shared/realdata; skips the test when absent (fails instead under CI=true)."""
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data folder {path} is missing under CI")
        pytest.skip(f"real data folder {path} is absent")
    return path
