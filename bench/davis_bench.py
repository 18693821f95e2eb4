"""Davis benchmark: the activity model vs GraphDTA / DeepDTA (published) vs a classical baseline.

Splits: the standard DeepDTA setting-1 test fold (train = the five train folds), cold-drug and
scaffold (20 % of the pairs, whole drugs / Bemis-Murcko scaffolds held out, seed 0) on all pairs.
Prints a table and writes bench/results_davis.json. Device-agnostic (``--device cuda``).

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 python bench/davis_bench.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from molecules.activity import ActivityConfig, fit_activity, predict_table
from molecules.dti_baseline import fit_predict_baseline
from molecules.dti_data import read_davis, split_mask
from molecules.dti_metrics import dti_metrics

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT / ".." / "shared" / "realdata" / "dti" / "davis"
PUBLISHED = {"GraphDTA (GIN), published": {"ci": 0.893, "mse": 0.229},
             "DeepDTA, published": {"ci": 0.878, "mse": 0.261}}


def _splits(table, which: list[str], seed: int):
    for name in which:
        if name == "standard":
            yield "standard", table.split == "test"
        else:
            yield name, split_mask(table, name, 0.2, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--davis", type=Path, default=DAVIS)
    p.add_argument("--splits", default="standard,cold-drug,scaffold")
    p.add_argument("--epochs", type=int, default=ActivityConfig.epochs)
    p.add_argument("--target-encoder", default="embedding,kmer")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--config", default="{}", help="JSON overrides of ActivityConfig")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results_davis.json")
    p.add_argument("--merge", action="store_true", help="keep the rows of other splits already in --out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = tuple(s for s in args.target_encoder.split(",") if s)
    config = ActivityConfig(epochs=args.epochs, target_parts=parts, seed=args.seed, **json.loads(args.config))
    table = read_davis(args.davis)
    command = "python bench/davis_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for split, test in _splits(table, args.splits.split(","), args.seed):
        train_t, test_t = table.subset(~test), table.subset(test)
        n = {"n_train": int((~test).sum()), "n_test": int(test.sum())}
        t0 = time.perf_counter()
        model = fit_activity(train_t, config, args.device)
        train_s = time.perf_counter() - t0
        m = dti_metrics(test_t.value, predict_table(model, test_t))
        rows.append({"split": split, "method": "FusionRx GNN x target encoder", **m, **n, "train_s": round(train_s, 1),
                     "epochs": config.epochs, "command": command})
        print(json.dumps(rows[-1]), flush=True)
        if not args.no_baseline:
            t0 = time.perf_counter()
            pred = fit_predict_baseline(train_t, test_t, seed=args.seed)
            rows.append({"split": split, "method": "GBT on Morgan-256 bits + k-mer composition", **dti_metrics(test_t.value, pred),
                         **n, "train_s": round(time.perf_counter() - t0, 1), "command": command})
            print(json.dumps(rows[-1]), flush=True)
        if split == "standard":
            rows += [{"split": split, "method": k, **v, "pearson": None, **n, "train_s": None}
                     for k, v in PUBLISHED.items()]
    print(f"\n{'split':<10} {'method':<40} {'CI':>6} {'MSE':>6} {'r':>6} {'n_test':>6} {'train s':>8}")
    for r in rows:
        fmt = (lambda v: f"{v:6.3f}" if isinstance(v, float) else f"{'-':>6}")
        print(f"{r['split']:<10} {r['method']:<40} {fmt(r['ci'])} {fmt(r['mse'])} {fmt(r['pearson'])} "
              f"{r['n_test']:>6} {r['train_s'] if r['train_s'] is not None else '-':>8}")
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name(torch.device(args.device))
    done = {r["split"] for r in rows}
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        rows = [r for r in old["rows"] if r["split"] not in done] + rows
    out = {"config": config.to_dict(), "device": device, "threads": args.threads, "cpu": platform.processor(),
           "rows": rows}
    args.out.write_text(json.dumps(out, indent=1, default=lambda v: None if isinstance(v, float) and np.isnan(v) else v))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
