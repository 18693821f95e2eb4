"""Bag modalities in the experiment engine on planted slide-tile bags (tests/fusion/planted_bags.py): 3-fold CV
AUC of every model, gated-attention MIL vs the default masked-mean encoder vs the bag-mean baseline.

``python bench/experiment_bags.py [--quick] [--out bench/experiment_bags.json]`` prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python bench/experiment_bags.py"


def measure(seeds: list[int], epochs: int, n: int = 80) -> dict[str, dict]:
    """{model: {'auc': [per seed mean AUC], 'wall_s': total}} over ``seeds``."""
    sys.path.insert(0, str(ROOT))
    from fusion.experiment import ExperimentOptions, run_experiment
    from imaging.mil import GatedAttentionMIL
    from tests.fusion.planted_bags import planted_bags, stratified_splits

    mil = {"wsi": lambda d: GatedAttentionMIL(d, embed_dim=16, attn_dim=16)}
    out: dict[str, dict] = {}
    for seed in seeds:
        data = planted_bags(n=n, flat_shift=0.25, seed=seed)
        splits = stratified_splits(data, k=3, seed=seed)
        runs = [
            (ExperimentOptions(strategies=("early", "late", "attention", "kronecker", "coattention"), epochs=epochs,
                               lr=3e-3, robustness=False, encoder_factories=mil), ""),
            (ExperimentOptions(strategies=(), epochs=epochs, lr=3e-3, baseline=False, modality_filter=["wsi"]),
             " (masked mean)"),
        ]
        for opts, suffix in runs:
            clock = [time.perf_counter()]
            results = run_experiment(data, splits, opts, progress=lambda _line: clock.append(time.perf_counter()))
            for r, t0, t1 in zip(results, clock[:-1], clock[1:]):
                row = out.setdefault(r.name + suffix, {"auc": [], "wall_s": 0.0})
                row["auc"].append(r.mean)
                row["wall_s"] += t1 - t0
    return out


def run(quick: bool) -> list[dict]:
    """Rows for ``python -m bench``: MIL and co-attention AUC beside the bag-mean baseline's."""
    res = measure([0] if quick else [0, 1, 2], 40 if quick else 60)
    base = sum(res["baseline:logistic"]["auc"]) / len(res["baseline:logistic"]["auc"])
    rows = []
    for name in ("single:wsi", "single:wsi (masked mean)", "fusion:coattention"):
        ours = sum(res[name]["auc"]) / len(res[name]["auc"])
        rows.append({"what": f"planted tumour tiles, 3-fold AUC: {name}", "ours": round(ours, 3),
                     "baseline": round(base, 3), "baseline_name": "logistic on bag means + expr",
                     "ratio": round(ours / base, 3), "unit": "AUC", "command": COMMAND + (" --quick" if quick else "")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one seed, 40 epochs (default: seeds 0-2, 60 epochs)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "experiment_bags.json")
    args = ap.parse_args()
    seeds, epochs = ([0], 40) if args.quick else ([0, 1, 2], 60)
    res = measure(seeds, epochs)
    print(f"planted bags: 80 patients, 20-60 tiles, 2-4 tumour tiles; seeds {seeds}, {epochs} epochs, 3-fold CV")
    print(f"{'model':34s} {'AUC per seed':28s} {'mean':>6s} {'wall s':>7s}")
    for name, r in res.items():
        aucs = " ".join(f"{a:.3f}" for a in r["auc"])
        print(f"{name:34s} {aucs:28s} {sum(r['auc']) / len(r['auc']):6.3f} {r['wall_s']:7.1f}")
    args.out.write_text(json.dumps({"seeds": seeds, "epochs": epochs, "models": res}, indent=1))


if __name__ == "__main__":
    main()
