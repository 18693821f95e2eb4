"""`fusionrx radiology DIR`: one patient's CT/PET + segmentations -> ROI phenotypes (JSON), NIfTI volumes, fused PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_radiology(args: argparse.Namespace) -> int:
    from flows.stages.radiology_study import analyse  # imaging stack imported only when the command runs

    report, arrays = analyse(Path(args.directory), args.roi, args.radiomics, args.texture)
    if args.out:
        from flows.stages.radiology_outputs import write_outputs

        report["outputs"] = [str(p) for p in write_outputs(Path(args.out), **arrays)]
    if args.format == "json":
        print(json.dumps(report, indent=1))
    else:
        print(f"patient {report['patient_id']}")
        for s in report["series"]:
            print(f"  series {s['modality']:3s} {s['n_files']:4d} files  role={s['role']}  {s['path']}")
        print(f"  ROIs: {', '.join(report['rois']) or '(none)'}")
        for key, value in report["phenotypes"].items():
            print(f"  {key:18s} {value:.3f}" if isinstance(value, float) else f"  {key:18s} {value}")
        for grid, feats in report.get("radiomics", {}).items():
            print(f"  IBSI features on the {grid.upper()} grid: {len(feats)} (all in --format json)")
        for p in report["problems"]:
            print(f"  skipped {p['path']}: {p['error']}")
        for p in report.get("outputs", []):
            print(f"  wrote {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `radiology` to the CLI."""
    r = sub.add_parser("radiology", help="CT/PET + RTSTRUCT/SEG/NIfTI of one patient -> ROI phenotypes (IBSI)")
    r.add_argument("directory", help="one patient's DICOM files (any layout)")
    r.add_argument("--roi", default=None, help="ROI name in the segmentations (default: automatic lesion)")
    r.add_argument("--out", default=None, help="folder for NIfTI volumes and the fused PET/CT PNG")
    r.add_argument("--radiomics", action="store_true", help="add IBSI features of the ROI on the CT and PET grids")
    r.add_argument("--texture", action="store_true",
                   help="add the IBSI texture families (GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM; mirp; slower)")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=_cmd_radiology)
