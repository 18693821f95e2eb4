"""Time of the real-cohort experiments with ALL models (CoxNet, each single modality and each fusion
strategy, Cox and discrete-time NLL heads) on the published splits, through the same code path as
`fusionrx experiment` (results DB, MLflow file store, HTML report). Goal: BLCA under 10 minutes on 2 CPU cores.

Usage (from the project root): OMP_NUM_THREADS=1 python bench/experiment_bench.py [--cohorts blca ucec]
    [--add-strategies experts] [--set KEY=VALUE ...] [--workers N] [--no-best] [--out bench/experiment_results.json]
Prints every model's c-index mean +- std beside MCAT's published numbers, with the mean td-AUC, the
integrated Brier score (ibs, lower is better) and its training-fold Kaplan-Meier reference (ibs_km) over
the folds able to support them, and each fusion row's paired per-fold gain over the best single modality
(mean +- standard error); never used as a test. ``--add-strategies`` appends strategies (e.g. ``experts``)
to the spec's own; ``--set`` overrides the spec's options (YAML values, e.g. ``--set tune=false
early_stopping=null``). Rows whose options were chosen by inner CV (fusion.tuning) print their choice per fold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohorts", nargs="+", default=["blca", "ucec"])
    ap.add_argument("--out", default="bench/experiment_results.json")
    ap.add_argument("--add-strategies", nargs="*", default=[], help="strategies added to the spec's (e.g. experts)")
    ap.add_argument("--workers", type=int, default=1, help="processes for the neural models and the nested selection")
    ap.add_argument("--no-best", action="store_true", help="leave out the nested-selection rows (options.best)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override the spec's options (ExperimentOptions fields; values read as YAML)")
    args = ap.parse_args()
    from dataclasses import replace

    from flows.experiments.report import gain_column
    from flows.experiments.runner import run_spec
    from flows.experiments.spec import load_spec

    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_avg_start": os.getloadavg()}, "cohorts": {}}
    for cohort in args.cohorts:
        spec = Path("experiments") / f"{cohort}_survival.yaml"
        opts = load_spec(spec).experiment_options()
        opts = replace(opts, strategies=list(opts.strategies) + [s for s in args.add_strategies
                                                                  if s not in opts.strategies],
                       best=opts.best and not args.no_best)
        opts = replace(opts, **_overrides(args.set))
        with tempfile.TemporaryDirectory() as store:
            t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            res = run_spec(spec, store, options=opts, progress=lambda s: print(f"  [{cohort}] {s}", flush=True),
                          workers=args.workers)
            wall = time.perf_counter() - t0
            c1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        rows = res["rows"]
        print(f"\n{cohort.upper()}: {len(rows)} rows, wall {wall:.0f} s, process CPU {cpu:.0f} s "
              f"(load average now {os.getloadavg()[0]:.1f})")
        print(f"{'model':28s} {'c_index':>8s} {'std':>6s} {'td_auc':>7s} {'ibs':>6s} {'ibs_km':>6s}  folds")
        for r, gain in zip(rows, gain_column(rows)):
            folds = " ".join(f"{v:.3f}" for v in r["folds"]) or "(published)"
            om, n_ok = r.get("other_metrics") or {}, r.get("other_metrics_folds") or {}
            extra = " ".join(f"{om[k]:{w}.3f}" if k in om else " " * w for k, w in (("td_auc", 7), ("ibs", 6),
                                                                                 ("ibs_km", 6)))
            short = {k: f"{k}:{n}/{len(r['folds'])}" for k, n in n_ok.items() if n < len(r["folds"])}
            print(f"{r['name']:28s} {r['mean']:8.3f} {r['std']:6.3f} {extra}  {folds}"
                  + (f"  ({', '.join(short.values())} folds)" if short else "") + (f"  gain {gain}" if gain else ""))
        if any(r["strategy"] == "published" for r in rows):
            print("published rows: MCAT (Chen et al. 2021) models see slides + genomics (MCAT, AMIL) or genomics (SNN);"
                  " ours here see genomics only: MCAT/AMIL are not like for like")
        for r in rows:
            if r.get("chosen"):
                print(f"{r['name']} chose, per fold: {', '.join(r['chosen'])}")
            options = [t.get("options") for t in r.get("tuned") or [] if isinstance(t, dict)]
            if options and all(options) and r["strategy"] not in ("best", "experts", "baseline"):
                print(f"{r['name']} options, per fold: "
                      + " | ".join(",".join(f"{k}={v}" for k, v in o.items()) for o in options))
        out["cohorts"][cohort] = {"wall_s": wall, "cpu_s": cpu, "rows": rows, "strategies": list(opts.strategies),
                                  "options": {k: getattr(opts, k) for k in ("tune", "early_stopping", "best")},
                                  "set": list(args.set), "load_avg_end": os.getloadavg()}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(f"\nwrote {args.out}")


def _overrides(pairs: list[str]) -> dict:
    """{field: value} from KEY=VALUE strings (values parsed as YAML: true, null, 0.2, [a, b])."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE, found {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    main()
