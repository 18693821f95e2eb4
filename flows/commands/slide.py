"""`fusionrx slide PATH`: what a whole-slide image is, and with --out its thumbnail and tissue mask;
`fusionrx slide PATH --verify`: decode every tile of every level, name the damaged ones (exit 1 if any)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_verify(args: argparse.Namespace) -> int:
    """Decode every tile of every level; print the damaged ones; 0 when none, 1 otherwise."""
    from imaging.slide_summary import verify_slide

    report = verify_slide(args.path)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
        return 0 if report.ok else 1
    print(f"{report.path}: {report.tiles_checked} tiles on {report.levels} levels decoded "
          f"({', '.join(report.decoders)}): {len(report.damaged)} damaged")
    for tile in report.damaged:
        print(f"  {tile.describe()}")
    return 0 if report.ok else 1


def _cmd_slide(args: argparse.Namespace) -> int:
    from imaging.slide_summary import summarise_slide

    if args.verify:
        return _cmd_verify(args)

    info = summarise_slide(args.path, tile_size=args.tile_size, target_mpp=args.target_mpp,
                           min_tissue=args.min_tissue, out_dir=args.out)
    if args.format == "json":
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if key == "levels":
            for lv in value:
                print(f"level {lv['level']}: {lv['width']} x {lv['height']} px, downsample {lv['downsample']:g}, "
                      f"{lv['mpp']:.4g} um/px")
        else:
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `slide` command (tile defaults: the run config's, so the count is what `fusionrx run` tiles)."""
    from flows.config import RunConfig

    run = RunConfig()
    p = sub.add_parser("slide", help="describe a whole-slide image (any OpenSlide format or plain TIFF)")
    p.add_argument("path", type=Path, help="slide file (svs, ndpi, mrxs, scn, tiff, ...) or DICOM WSI folder")
    p.add_argument("--out", type=Path, default=None, help="folder for the thumbnail and tissue-mask PNGs")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--verify", action="store_true",
                   help="decode every tile of every level and list the damaged ones (exit 1 if any)")
    p.add_argument("--tile-size", type=int, default=run.tile_size, help="tile side in px at --target-mpp")
    p.add_argument("--target-mpp", type=float, default=run.target_mpp, help="um per px of the tiles")
    p.add_argument("--min-tissue", type=float, default=run.min_tissue, help="tissue fraction a tile needs")
    p.set_defaults(func=_cmd_slide)
