"""ROI phenotypes on the real STS CT/PET (TCIA, via MIRP) and IBSI digital-phantom features, as a table + JSON.

Usage: python bench/radiology_rois.py [--out bench/radiology_rois.json]
Every ROI of each RTSTRUCT on both grids (CT and PET), the raw whole-body BQML PET with its GTV, and
our IBSI feature values beside the consensus reference and tolerance. Never used as a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from imaging.dicom_series import read_dicom_series
from imaging.nifti import read_nifti
from imaging.pet import read_pet_suv
from imaging.phenotypes import roi_phenotypes
from imaging.radiomics import ibsi_features
from imaging.segmentation import read_roi_mask

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
KEYS = ("volume_ml", "volume_ml_mesh", "volume_ml_pet", "ct_mean_hu", "suv_max", "suv_peak", "suv_peak_global",
        "suv_mean", "mtv_ml", "tlg")


def sts_rows() -> list[dict]:
    """Both GTVs of STS_001/002 (CT statistics on the CT grid, PET statistics on the PET grid) and the raw PET."""
    rows = []
    for patient in ("STS_001", "STS_002"):
        root = REALDATA / "dicom" / "sts_cropped" / patient
        t0 = time.perf_counter()
        ct, suv = read_dicom_series(root / "CT" / "image"), read_pet_suv(root / "PET" / "image")
        for modality, roi in (("CT", "GTV_Mass_CT"), ("PET", "GTV_Mass_PET")):
            rs = root / modality / "mask" / "RS.dcm"
            phen = roi_phenotypes(ct, read_roi_mask(rs, roi, ct), suv, read_roi_mask(rs, roi, suv))
            rows.append({"patient": patient, "roi": roi, **{k: phen[k] for k in KEYS}})
        rows[-1]["seconds"] = rows[-2]["seconds"] = time.perf_counter() - t0
    raw = REALDATA / "dicom" / "sts_raw_pet" / "STS_001"
    t0 = time.perf_counter()
    suv = read_pet_suv(raw / "image")
    phen = roi_phenotypes(None, None, suv, read_roi_mask(raw / "mask" / "1-1.dcm", "GTV_Mass", suv))
    rows.append({"patient": "STS_001 raw BQML", "roi": "GTV_Mass", **{k: phen[k] for k in KEYS},
                 "seconds": time.perf_counter() - t0})
    return rows


def ibsi_rows() -> list[dict]:
    """Our IBSI phantom features beside the reference value and tolerance (tolerance 0: as published, 3 s.f.)."""
    root = REALDATA / "ibsi"
    image = read_nifti(root / "digital_phantom" / "nifti" / "image" / "phantom.nii.gz")
    mask = read_nifti(root / "digital_phantom" / "nifti" / "mask" / "mask.nii.gz").array > 0
    ours = ibsi_features(image, mask)
    rows = []
    with (root / "reference_values" / "ibsi_1_dig_phantom.csv").open() as fh:
        for r in csv.DictReader(fh, delimiter=";"):
            if r["tag"] in ours and r["reference value"]:
                ref, tol = float(r["reference value"]), float(r["tolerance"])
                ok = abs(ours[r["tag"]] - ref) <= tol if tol > 0 else float(f"{ours[r['tag']]:.3g}") == ref
                rows.append({"tag": r["tag"], "ours": ours[r["tag"]], "reference": ref, "tolerance": tol, "ok": ok})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).with_name("radiology_rois.json")))
    args = parser.parse_args()
    sts, ibsi = sts_rows(), ibsi_rows()
    print(f"{'patient':18s} {'roi':13s} " + " ".join(f"{k:>15s}" for k in KEYS))
    for r in sts:
        print(f"{r['patient']:18s} {r['roi']:13s} " + " ".join(f"{r[k]:15.4f}" for k in KEYS))
    print(f"\n{'IBSI tag':28s} {'ours':>12s} {'reference':>10s} {'tolerance':>10s}")
    for r in ibsi:
        print(f"{r['tag']:28s} {r['ours']:12.5g} {r['reference']:10.4g} {r['tolerance']:10.4g} "
              f"{'ok' if r['ok'] else 'FAIL'}")
    print(f"\nIBSI: {sum(r['ok'] for r in ibsi)}/{len(ibsi)} features within tolerance")
    Path(args.out).write_text(json.dumps({"sts": sts, "ibsi": ibsi}, indent=1))


if __name__ == "__main__":
    main()
