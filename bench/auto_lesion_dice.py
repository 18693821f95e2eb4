"""Dice between the automatic lesion (imaging.roi.auto_lesion) and the delineated GTV on the shared real PETs.

Usage: OMP_NUM_THREADS=1 python -m bench.auto_lesion_dice [--json out.json]
Cases: STS_001 / STS_002 cropped CT+PET (GTV_Mass_PET on the PET grid, GTV_Mass_CT on the CT grid), the
same PETs without their CT, and the raw whole-body GE PET of STS_001 (GTV_Mass, no CT). Never used as a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from imaging.dicom_series import read_dicom_series
from imaging.pet import read_pet_suv
from imaging.roi import auto_lesion
from imaging.segmentation import read_roi_mask

DICOM = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "dicom"


def dice(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """2|A&B| / (|A|+|B|); NaN when either mask is missing or both are empty."""
    if a is None or b is None or not (a.sum() + b.sum()):
        return float("nan")
    return float(2.0 * (a & b).sum() / (a.sum() + b.sum()))


def _row(case: str, label: str, auto_pet, gtv_pet, suv, auto_ct=None, gtv_ct=None, ct=None, seconds=0.0) -> dict:
    return {"case": case, "auto_label": label, "dice_pet_grid": dice(auto_pet, gtv_pet),
            "dice_ct_grid": dice(auto_ct, gtv_ct),
            "auto_ml_pet": float(auto_pet.sum() * suv.voxel_volume_ml) if auto_pet is not None else float("nan"),
            "gtv_ml_pet": float(gtv_pet.sum() * suv.voxel_volume_ml),
            "auto_ml_ct": float(auto_ct.sum() * ct.voxel_volume_ml) if auto_ct is not None else float("nan"),
            "gtv_ml_ct": float(gtv_ct.sum() * ct.voxel_volume_ml) if gtv_ct is not None else float("nan"),
            "seconds": seconds}


def rows() -> list[dict]:
    out = []
    for patient in ("STS_001", "STS_002"):
        root = DICOM / "sts_cropped" / patient
        ct, suv = read_dicom_series(root / "CT" / "image"), read_pet_suv(root / "PET" / "image")
        gtv_pet = read_roi_mask(root / "PET" / "mask" / "RS.dcm", "GTV_Mass_PET", suv)
        gtv_ct = read_roi_mask(root / "CT" / "mask" / "RS.dcm", "GTV_Mass_CT", ct)
        t0 = time.perf_counter()
        label, auto_ct, auto_pet = auto_lesion(ct, suv)
        out.append(_row(f"{patient} cropped CT+PET", label, auto_pet, gtv_pet, suv, auto_ct, gtv_ct, ct,
                        time.perf_counter() - t0))
        t0 = time.perf_counter()
        label, _, auto_pet = auto_lesion(None, suv)
        out.append(_row(f"{patient} cropped PET only", label, auto_pet, gtv_pet, suv,
                        seconds=time.perf_counter() - t0))
    raw = DICOM / "sts_raw_pet" / "STS_001"
    suv = read_pet_suv(raw / "image")
    gtv = read_roi_mask(raw / "mask" / "1-1.dcm", "GTV_Mass", suv)
    t0 = time.perf_counter()
    label, _, auto_pet = auto_lesion(None, suv)
    out.append(_row("STS_001 raw whole-body GE PET (no CT)", label, auto_pet, gtv, suv,
                    seconds=time.perf_counter() - t0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    table = rows()
    print(f"{'case':40s} {'auto label':22s} {'Dice PET':>9s} {'Dice CT':>8s} {'auto ml':>8s} {'GTV ml':>8s}")
    for r in table:
        print(f"{r['case']:40s} {r['auto_label']:22s} {r['dice_pet_grid']:9.3f} {r['dice_ct_grid']:8.3f} "
              f"{r['auto_ml_pet']:8.1f} {r['gtv_ml_pet']:8.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
