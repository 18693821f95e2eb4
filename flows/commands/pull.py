"""`fusionrx pull`: studies from a PACS (DICOMweb or DIMSE) into a folder, the way gdc-client downloads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_pull(args: argparse.Namespace) -> int:
    from flows.pacs import pull_dicomweb, pull_dimse
    from flows.pacs.deidentify import Deidentifier, PseudonymMap

    deid = None
    if args.deidentify:  # the map stays at the site: beside OUT, never inside it
        site_map = args.pseudonym_map or args.out.parent / f"{args.out.name}.pseudonyms.json"
        deid = Deidentifier(PseudonymMap.load(site_map))
    if args.dicomweb:
        report = pull_dicomweb(args.dicomweb, args.out, args.patient, args.study, deidentifier=deid)
    else:
        host, _, port = args.dimse.rpartition(":")
        report = pull_dimse(host or "127.0.0.1", int(port), args.out, args.aet, args.calling_aet, args.patient,
                            args.study, deidentifier=deid)
    out = report.to_dict()
    if args.format == "json":
        print(json.dumps(out, indent=1))
    else:
        print(f"[pull] {out['source']}: {out['n_studies']} studies, {out['n_instances']} instances: "
              f"{out['pulled']} pulled, {out['already_present']} already in {out['out_dir']} "
              f"({out['wall_s']:.1f} s, {out['instances_per_s'] or 0:.1f} instances/s)")
        for f in out["failed"]:
            print(f"  - study {f['study_uid']} (patient {f['patient_id']}): {f['error']}")
    return 1 if out["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx pull`."""
    p = sub.add_parser("pull", help="pull studies from a PACS (DICOMweb or DIMSE C-GET) into a folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dicomweb", metavar="URL", help="DICOMweb base URL (auth: FUSIONRX_DICOMWEB_USER/PASSWORD or _TOKEN)")
    src.add_argument("--dimse", metavar="HOST:PORT", help="DICOM node for C-FIND / C-GET")
    p.add_argument("--aet", default="ORTHANC", help="the node's AE title (DIMSE)")
    p.add_argument("--calling-aet", default="FUSIONRX", help="our AE title (DIMSE)")
    p.add_argument("--patient", default=None)
    p.add_argument("--study", default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--deidentify", action="store_true", help="write de-identified copies only (PS3.15 basic profile, "
                   "patient characteristics kept, dates shifted per patient, UIDs replaced consistently)")
    p.add_argument("--pseudonym-map", type=Path, default=None, help="the site's pseudonym map (default: "
                   "OUT.pseudonyms.json beside OUT; keep it, never share it)")
    p.set_defaults(func=_cmd_pull)
