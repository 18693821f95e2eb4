"""`fusionrx phenotypes --store S`: one row per patient of the ROI phenotypes that `run` measured."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from fusion.errors import FusionRxError

SHOWN = ("roi", "roi_source", "suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg", "volume_ml", "ct_mean_hu",
         "n_lesions", "total_mtv_ml", "total_tlg")


def read_phenotypes(store: Path, lesions: bool = False) -> list[dict]:
    """The store's phenotype rows (patient level, or lesion level with ``lesions``); JSON-safe values."""
    import pandas as pd

    path = Path(store) / "imaging" / ("lesions.parquet" if lesions else "phenotypes.parquet")
    if not path.is_file():
        raise FusionRxError(f"{path}: no phenotypes in this store (run `fusionrx run` with a CT source first)")
    table = pd.read_parquet(path)
    if not lesions:
        table = table.reset_index()
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in table.to_dict("records")]


def _cmd_phenotypes(args: argparse.Namespace) -> int:
    rows = read_phenotypes(args.store, args.lesions)
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=str))
        return 0
    import pandas as pd

    table = pd.DataFrame(rows)
    cols = [c for c in ("patient_id", "name", "source", *SHOWN) if c in table.columns]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `phenotypes` command."""
    p = sub.add_parser("phenotypes", help="ROI phenotypes per patient (SUV, MTV, TLG, volume, HU) from a run's store")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--lesions", action="store_true", help="one row per matching ROI instead of per patient")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_cmd_phenotypes)
