"""The IBSI 1 digital phantom's reference values and the IBSI agreement rule, shared by the radiomics tests."""

from __future__ import annotations

import csv
import math

from tests.realdata import realdata_dir


def ibsi_reference() -> dict[str, tuple[float, float]]:
    """tag -> (reference value, tolerance) from the IBSI csv (rows without a value are left out)."""
    path = realdata_dir() / "ibsi" / "reference_values" / "ibsi_1_dig_phantom.csv"
    with path.open() as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    return {r["tag"]: (float(r["reference value"]), float(r["tolerance"])) for r in rows if r["reference value"]}


def ibsi_agrees(ours: float, ref: float, tol: float) -> bool:
    """Within the IBSI tolerance; a tolerance of 0 means the value as published (3 significant figures)."""
    if not math.isfinite(ours):
        return False
    if tol > 0:
        return abs(ours - ref) <= tol
    return float(f"{ours:.3g}") == ref
