"""Where the shared real public test files live (../shared/realdata from the project root)."""

import os
from pathlib import Path

import pytest


def realdata_dir() -> Path:
    """The realdata folder; skip when it is absent, except under CI=true where its absence fails the test."""
    root = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
    if not root.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{root} is absent; CI must provide the real test data")
        pytest.skip(f"{root} is absent (real public test files); CI=true would fail here")
    return root
