"""Federated vs centralised vs each site alone on the generated cohort (3 sites, different subtype mixes and
missing-modality rates), plus the DICOMweb pull rate against reading the same files from disk.

    python bench/federated_bench.py --catalog DEMO/data_catalog.yaml --store STORE [--rounds 10] [--pacs]

Writes bench/results_federated.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def federated(args) -> dict:
    from flows.federated.cohort import load_store_cohort
    from flows.federated.simulate import FederatedConfig, simulate
    from flows.federated.sites import SiteSpec

    frames, labels = load_store_cohort(args.catalog, args.store)
    rows = {}
    for strategy in ("fedavg", "fedprox"):
        cfg = FederatedConfig(rounds=args.rounds, local_epochs=args.local_epochs, folds=args.folds, strategy=strategy,
                              sites=SiteSpec(n_sites=3, seed=args.seed))
        rows[strategy] = {k: v for k, v in simulate(frames, labels, cfg).items() if k != "config"}
    return rows


def pacs_rate(args) -> dict:
    """Instances/s: DICOMweb pull from a local Orthanc vs pydicom reading the same files from disk."""
    import pydicom

    from flows.pacs import pull_dicomweb
    from tests.flows.orthanc import Orthanc

    files = sorted(p for p in Path(args.catalog).parent.rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))
    dicom = []
    for f in files:
        try:
            pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            dicom.append(f)
        except Exception:  # noqa: BLE001 - not DICOM
            continue
    dicom = dicom[: args.max_instances]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = Orthanc(Path(tmp) / "orthanc").start()
        try:
            server.upload(dicom)
            t0 = time.perf_counter()
            for f in dicom:  # read each instance and decode its pixels (RTSTRUCTs have none)
                ds = pydicom.dcmread(f)
                if "PixelData" in ds:
                    ds.pixel_array
            disk_rate = len(dicom) / (time.perf_counter() - t0)
            report = pull_dicomweb(server.dicomweb, Path(tmp) / "pulled").to_dict()
        finally:
            server.stop()
    return {"instances": len(dicom), "dicomweb_instances_per_s": report["instances_per_s"],
            "disk_read_instances_per_s": round(disk_rate, 1),
            "ratio_pull_vs_disk": round(report["instances_per_s"] / disk_rate, 3)}


def main() -> int:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    p = argparse.ArgumentParser()
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=8)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pacs", action="store_true", help="also measure the DICOMweb pull rate (needs Orthanc)")
    p.add_argument("--max-instances", type=int, default=2000)
    p.add_argument("--pacs-only", action="store_true", help="only the DICOMweb pull rate")
    args = p.parse_args()
    path = Path(__file__).with_name("results_federated.json")
    out = json.loads(path.read_text()) if args.pacs_only and path.exists() else {}
    if not args.pacs_only:
        out["federated"] = federated(args)
        path.write_text(json.dumps(out, indent=1))
    for strategy, r in out.get("federated", {}).items():
        print(f"{strategy:8s} centralised {r['centralised_auc']:.3f} | federated {r['federated_auc']:.3f} | sites alone "
              f"{' '.join(f'{a:.3f}' for a in r['site_auc'])} | bytes/round {r['bytes_per_round']:,} | {r['wall_s']} s")
    if args.pacs:
        out["pacs"] = pacs_rate(args)
        print(f"DICOMweb pull {out['pacs']['dicomweb_instances_per_s']} instances/s vs disk read "
              f"{out['pacs']['disk_read_instances_per_s']} instances/s ({out['pacs']['instances']} instances)")
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
