"""Where the real public test files are (../shared/realdata from the project root), and the skip rule:
a test may skip when the folder is absent, never under CI=true (there it fails)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def realdata_dir(*parts: str) -> Path:
    """The real-data path (``realdata_dir("dicom", "sts_cropped")``); skips or fails when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real test data missing under CI=true: {path}")
        pytest.skip(f"real test data not found: {path} (../shared/realdata beside the project)")
    return path
