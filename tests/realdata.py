"""Where the shared real public test files live (../shared/realdata from the project root), and the skip
rule: a test may skip when the folder is absent, never under CI=true (there it fails)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def realdata_dir(*parts: str) -> Path:
    """The realdata folder (or a path inside it: ``realdata_dir("dicom", "sts_cropped")``); skips when it
    is absent, except under CI=true where that fails the test."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata").resolve().joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path}: shared real data missing (required under CI=true)")
        pytest.skip(f"{path}: shared real data absent")
    return path
