"""IBSI texture features (imaging/radiomics_texture.py, via MIRP): agreement with the IBSI 1 digital phantom per
family and aggregation, and wall time for all 408 texture features on the phantom and on a real STS PET GTV.

Usage: python bench/ibsi_texture.py [--out bench/ibsi_texture.json]
Phantom: IBSI configuration (no resampling, fixed bin size 1). STS_001 PET (SUVbw, GTV_Mass_PET): fixed bin
size 0.25 SUV and fixed bin number 32. A tolerance of 0 in the reference table means the value as published
(3 significant figures). Never used as a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from imaging.nifti import read_nifti
from imaging.pet import read_pet_suv
from imaging.radiomics_texture import FAMILIES, reference_tag, texture_features
from imaging.segmentation import read_roi_mask

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
AGGREGATIONS = ("2D_avg", "2D_comb", "2_5D_avg", "2_5D_comb", "3D_avg", "3D_comb", "2D", "2_5D", "3D")
_AGG_ORDER = [a.replace("2_5D", "2.5D") for a in AGGREGATIONS] + ["all"]


def _agrees(ours: float, ref: float, tol: float) -> bool:
    if not np.isfinite(ours):
        return False
    return abs(ours - ref) <= tol if tol > 0 else float(f"{ours:.3g}") == ref


def _reference() -> dict[str, tuple[float, float]]:
    with (REALDATA / "ibsi" / "reference_values" / "ibsi_1_dig_phantom.csv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    return {r["tag"]: (float(r["reference value"]), float(r["tolerance"])) for r in rows if r["reference value"]}


def _timed(fn, *args, **kwargs) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def phantom() -> tuple[list[dict], list[str], float]:
    """Per family x aggregation: matched / with a reference; the tags that do not match; seconds."""
    root = REALDATA / "ibsi" / "digital_phantom" / "nifti"
    image, mask = read_nifti(root / "image" / "phantom.nii.gz"), read_nifti(root / "mask" / "mask.nii.gz").array > 0
    features, seconds = _timed(texture_features, image, mask, bin_width=1.0)
    reference = _reference()
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    failing = []
    for name, value in features.items():
        tag = reference_tag(name)
        if tag not in reference:
            continue
        family = FAMILIES[tag.split("_", 1)[0]]
        aggregation = next(a for a in AGGREGATIONS if tag.endswith("_" + a)).replace("2_5D", "2.5D")
        ok = _agrees(value, *reference[tag])
        for key in ((family, aggregation), (family, "all")):
            counts[key][0] += ok
            counts[key][1] += 1
        if not ok:
            failing.append(tag)
    rows = [{"family": f, "aggregation": a, "matched": m, "total": n} for (f, a), (m, n) in sorted(
        counts.items(), key=lambda kv: (list(FAMILIES.values()).index(kv[0][0]), _AGG_ORDER.index(kv[0][1])))]
    return rows, failing, seconds


def sts() -> list[dict]:
    root = REALDATA / "dicom" / "sts_cropped" / "STS_001" / "PET"
    t0 = time.perf_counter()
    suv = read_pet_suv(root / "image")
    gtv = read_roi_mask(root / "mask" / "RS.dcm", "GTV_Mass_PET", suv)
    read_s = time.perf_counter() - t0
    rows = []
    for label, kwargs in (("bin width 0.25 SUV", {"bin_width": 0.25}), ("32 bins", {"n_bins": 32})):
        features, seconds = _timed(texture_features, suv, gtv, **kwargs)
        rows.append({"case": f"STS_001 PET GTV_Mass_PET, {label}", "grid": list(suv.shape),
                     "spacing_mm": [round(s, 3) for s in suv.spacing_mm], "roi_voxels": int(gtv.sum()),
                     "features": len(features), "nan": int(np.isnan(list(features.values())).sum()),
                     "seconds": seconds, "read_seconds": read_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    print(f"mirp {version('mirp')}, pandas {version('pandas')}, numpy {version('numpy')}")

    rows, failing, phantom_s = phantom()
    families = sorted({r["family"] for r in rows}, key=list(FAMILIES.values()).index)
    for family in families:
        print(f"\n{family}")
        print(f"  {'aggregation':12s} {'matched':>7s} / total")
        for r in (r for r in rows if r["family"] == family):
            print(f"  {r['aggregation']:12s} {r['matched']:7d} / {r['total']}")
    total = [r for r in rows if r["aggregation"] == "all"]
    print("\nsummary (family: matched / total with a reference)")
    for r in total:
        print(f"  {r['family']:6s} {r['matched']:4d} / {r['total']}")
    print(f"  {'all':6s} {sum(r['matched'] for r in total):4d} / {sum(r['total'] for r in total)}")
    print(f"not matching: {failing or 'none'}")

    print("\nwall time, all 408 texture features (2D, 2.5D and 3D aggregations)")
    print(f"  {'IBSI digital phantom (74 voxels), bin width 1':58s} {phantom_s:7.2f} s")
    sts_rows = sts()
    for r in sts_rows:
        print(f"  {r['case']:58s} {r['seconds']:7.2f} s  ({r['roi_voxels']} voxels on {r['grid']}, "
              f"{r['nan']} NaN)")
    if args.out:
        args.out.write_text(json.dumps({"phantom": rows, "not_matching": failing, "phantom_seconds": phantom_s,
                                        "sts": sts_rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
