"""`fusionrx federated`: fusion training across sites with Flower (simulation on one machine, or a real
deployment: one server, one client per site)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def _config(args: argparse.Namespace):
    from flows.federated.simulate import FederatedConfig
    from flows.federated.sites import ModelSpec, SiteSpec

    return FederatedConfig(rounds=args.rounds, local_epochs=args.local_epochs, folds=args.folds, strategy=args.strategy,
                           proximal_mu=args.mu, dp_noise=args.dp_noise, dp_clip=args.dp_clip,
                           sites=SiteSpec(n_sites=args.sites, seed=args.seed), model=ModelSpec(seed=args.seed))


def _cmd_federated(args: argparse.Namespace) -> int:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    from flows.federated.cohort import load_store_cohort

    frames, labels = load_store_cohort(args.catalog, args.store)
    if args.join:
        return _join(args, frames, labels)
    if args.serve:
        return _serve(args, frames, labels)
    from flows.federated.simulate import simulate

    out = simulate(frames, labels, _config(args))
    if args.format == "json":
        print(json.dumps({k: v for k, v in out.items() if k != "config"}, indent=1))
    else:
        print(f"[federated] {args.sites} sites, {out['strategy']}, {out['rounds']} rounds x {out['local_epochs']} local "
              f"epochs, {out['cv_folds']}-fold CV over {sum(out['sites']['n_patients'])} patients ({out['wall_s']} s)")
        print(f"  centralised AUC {out['centralised_auc']:.3f}   federated AUC {out['federated_auc']:.3f}   "
              f"sites alone {', '.join(f'{a:.3f}' for a in out['site_auc'])}")
        print(f"  bytes per round (weights down + up, all sites): {out['bytes_per_round']:,}")
    return 0


def _site_dataset(frames, labels):
    """A deployed site's own data: every patient of its store, standardised with its own statistics."""
    import numpy as np
    import pandas as pd

    from flows.federated.sites import combine_sums, feature_sums, standardise
    from fusion.data import MultimodalDataset

    patients = sorted(set(labels.index) & set().union(*[set(f.index) for f in frames.values()]))
    std = standardise(frames, combine_sums([feature_sums(frames, patients)]))
    codes, classes = pd.factorize(labels.reindex(patients), sort=True)
    ds = MultimodalDataset.from_frames({k: v.astype(np.float32) for k, v in std.items()}, patients, codes.astype(np.int64))
    return ds, classes


def _join(args, frames, labels) -> int:
    """Deployment: this site's store trains with the server at --join HOST:PORT."""
    import tempfile

    from flows.federated.flower import SitePayload, run_site, save_payload
    from flows.federated.sites import ModelSpec

    ds, classes = _site_dataset(frames, labels)
    task, n_out = ("binary", 1) if len(classes) == 2 else ("multiclass", len(classes))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.pkl"
        save_payload(SitePayload(0, ds, n_out, task, ModelSpec(seed=args.seed), args.local_epochs, args.seed), path)
        run_site(str(path), args.join)
    print(f"[federated] site finished: {ds.n_patients} patients trained locally; only weights were sent")
    return 0


def _serve(args, frames, labels) -> int:
    """Deployment: the server (its store only fixes the model's shape; no patient data is used)."""
    import torch

    from flows.federated.flower import make_strategy, serve
    from flows.federated.sites import ModelSpec, build_model, get_weights

    ds, classes = _site_dataset(frames, labels)
    task, n_out = ("binary", 1) if len(classes) == 2 else ("multiclass", len(classes))
    model = build_model(ds, n_out, task, ModelSpec(seed=args.seed))
    strategy = make_strategy(args.strategy, get_weights(model), args.sites, args.local_epochs, args.mu,
                             args.dp_noise, args.dp_clip)
    serve(args.serve, strategy, args.rounds)
    out = args.out or Path(args.store) / "models" / "federated_fusion.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"weights": strategy.final, "classes": [str(c) for c in classes], "rounds": args.rounds}, tmp)
    tmp.replace(out)
    print(f"[federated] {args.rounds} rounds done; global model {out}; bytes per round {strategy.bytes_per_round}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx federated`."""
    p = sub.add_parser("federated", help="federated fusion training across sites (Flower): simulation or deployment")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--store", required=True, type=Path, help="store of a `fusionrx run` (run first when empty)")
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=8)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--strategy", choices=["fedavg", "fedprox"], default="fedavg")
    p.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    p.add_argument("--dp-noise", type=float, default=None, help="server-side DP noise multiplier (Flower)")
    p.add_argument("--dp-clip", type=float, default=1.0, help="DP clipping norm of each site's update")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["table", "json"], default="table")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--serve", metavar="ADDRESS", help="deployment: run the Flower server on ADDRESS (host:port)")
    mode.add_argument("--join", metavar="ADDRESS", help="deployment: train this site's store with the server at ADDRESS")
    p.add_argument("--out", type=Path, default=None, help="--serve: where to write the global model")
    p.set_defaults(func=_cmd_federated)
