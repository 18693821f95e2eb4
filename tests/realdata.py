"""Where the shared real public test files live (../shared/realdata from the project root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def realdata_dir() -> Path:
    """The realdata folder; skip the test when it is absent, except under CI=true where that fails."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata").resolve()
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path}: shared real data folder missing (required under CI=true)")
        pytest.skip(f"{path}: shared real data folder absent")
    return path
