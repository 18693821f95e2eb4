"""`fusionrx activity evaluate | train | predict`: the molecule-to-target activity model on DTI tables."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fusion.errors import MoleculeError


def _table(args: argparse.Namespace):
    from molecules.dti_data import read_davis, read_dti_table

    if (args.table is None) == (args.davis is None):
        raise MoleculeError("activity: give exactly one of --table T.csv or --davis DIR")
    if args.davis is not None:
        return read_davis(args.davis)
    return read_dti_table(args.table, activity_type=args.activity_type)


def _config(args: argparse.Namespace, table):
    from molecules.activity import ActivityConfig

    if args.target_encoder == "auto":
        parts = ("embedding", "kmer") if table.sequences is not None and all(table.sequences) else ("embedding",)
    else:
        parts = tuple(p.strip() for p in args.target_encoder.split(",") if p.strip())
    kwargs = {"target_parts": parts, "seed": args.seed, "amp": not args.no_amp}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    return ActivityConfig(**kwargs)


def _threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from molecules.activity_io import evaluate_activity

    _threads(args)
    table = _table(args)
    result = evaluate_activity(table, args.split, _config(args, table), args.device, seed=args.seed,
                               nominal=args.nominal)
    if args.format == "json":
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
        if len(result["activity_types"]) > 1:
            print(f"activity types {result['activity_types']} modelled as separate tasks (target|type); "
                  "pick one with --activity-type", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from molecules.activity_io import fit_calibrated, save_activity_model

    _threads(args)
    table = _table(args)
    if table.split is not None and not args.all_pairs:
        table = table.subset(table.split == "train")
    t0 = time.perf_counter()
    model = fit_calibrated(table, _config(args, table), args.device, seed=args.seed, log_every=args.log_every)
    train_s = time.perf_counter() - t0
    info = {"n_pairs": len(table), "n_calibration": len(model.calibration), "train_s": round(train_s, 1),
            "activity_types": list(table.activity_types)}
    version = save_activity_model(model, args.out, extra={"source": table.source, **info})
    print(json.dumps({"model": str(args.out), "version": version, **info}))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from molecules.activity_io import score_compounds

    _threads(args)
    try:
        df = pd.read_csv(args.table)
    except (OSError, ValueError) as exc:
        raise MoleculeError(f"{args.table}: could not read the table ({exc})") from exc
    missing = [c for c in ("smiles", "target") if c not in df.columns]
    if missing:
        raise MoleculeError(f"{args.table}: missing column(s) {missing}; expected smiles, target [, sequence]")
    seqs = None
    if "sequence" in df.columns:
        seqs = {t: s for t, s in zip(df["target"].astype(str), df["sequence"]) if isinstance(s, str) and s}
    smiles = df["smiles"].astype(str).unique().tolist()
    scored = score_compounds(args.model, smiles, df["target"].astype(str).unique().tolist(), seqs,
                             device=args.device or "cpu", nominal=args.nominal)
    if not args.all_pairs:  # only the (smiles, target) rows of the table
        keys = set(zip(df["smiles"].astype(str), df["target"].astype(str)))
        scored = scored[[k in keys for k in zip(scored["smiles"], scored["target"])]].reset_index(drop=True)
    if args.out is not None:
        scored.to_csv(args.out, index=False)
    else:
        print(scored.to_csv(index=False), end="")
    for s in scored.attrs.get("skipped", []):
        print(f"[activity] skipped unparsable SMILES {s!r}", file=sys.stderr)
    if "value" in df.columns and not args.all_pairs:
        from molecules.dti_metrics import dti_metrics

        merged = df.astype({"smiles": str, "target": str}).merge(scored, on=["smiles", "target"])
        print(json.dumps(dti_metrics(merged["value"].to_numpy(np.float64), merged["predicted"])),
              file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser, table_required: bool = False) -> None:
    p.add_argument("--table", type=Path, help="CSV with smiles, target, value [, sequence, split]")
    p.add_argument("--davis", type=Path, help="the Davis folder (ligands_can.txt, proteins.txt, Y, folds/)")
    p.add_argument("--target-encoder", default="auto",
                   help="comma list of embedding,kmer,cnn (auto: embedding,kmer with sequences, else embedding)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--activity-type", default=None,
                   help="model only rows of this activity_type (Kd, Ki, IC50 ...); default: each type its own task")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `activity` with its evaluate / train / predict subcommands."""
    a = sub.add_parser("activity", help="molecule -> target activity model (GNN x target encoder)")
    asub = a.add_subparsers(dest="activity_command", required=True)

    e = asub.add_parser("evaluate", help="train on train pairs, print CI / MSE / Pearson on test pairs")
    _common(e)
    e.add_argument("--split", choices=["random", "scaffold", "cold-drug", "cold-target"], default=None,
                   help="default: the table's split column when present (Davis: the standard folds), else random")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.add_argument("--nominal", type=float, default=0.9, help="conformal interval level (coverage is measured)")
    e.set_defaults(func=_cmd_evaluate)

    t = asub.add_parser("train", help="train on a table (its train rows when it has a split) and save the model")
    _common(t)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--all-pairs", action="store_true", help="train on every row, ignoring the split column")
    t.add_argument("--log-every", type=int, default=0)
    t.set_defaults(func=_cmd_train)

    p = asub.add_parser("predict", help="score the (smiles, target) rows of a CSV with a saved model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--table", required=True, type=Path, help="CSV with smiles, target [, sequence, value]")
    p.add_argument("--out", type=Path, default=None, help="CSV to write (default: stdout)")
    p.add_argument("--all-pairs", action="store_true", help="every SMILES x every target of the table")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--nominal", type=float, default=0.9, help="level of the lower / upper interval columns")
    p.set_defaults(func=_cmd_predict)
