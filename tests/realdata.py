"""Where the shared real public test files live, and the skip rule for tests that need them."""

import os
from pathlib import Path

import pytest


def realdata_dir() -> Path:
    """../shared/realdata from the project root; skips when absent unless CI=true (then it fails)."""
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"realdata folder {path} is missing (required under CI=true)")
        pytest.skip(f"realdata folder {path} is absent")
    return path
