"""Federated simulation on one machine: N sites as separate processes against a Flower server on loopback,
beside the centralised model and each site alone, on the same cross-validation folds (same epoch budget)."""

from __future__ import annotations

import multiprocessing as mp
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from flows.federated.flower import SitePayload, make_strategy, run_site, save_payload, serve
from flows.federated.sites import (
    ModelSpec,
    SiteSpec,
    apply_site_missingness,
    assign_sites,
    build_model,
    combine_sums,
    feature_sums,
    local_fit,
    set_weights,
    site_missing_rates,
    standardise,
)
from fusion.data import MultimodalDataset
from fusion.errors import FusionDataError
from fusion.metrics import roc_auc
from fusion.train import predict


@dataclass
class FederatedConfig:
    """Rounds x local epochs of federated training (the centralised and site models get the same total)."""

    rounds: int = 10
    local_epochs: int = 8
    folds: int = 3
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    dp_noise: float | None = None
    dp_clip: float = 1.0
    sites: SiteSpec = field(default_factory=SiteSpec)
    model: ModelSpec = field(default_factory=ModelSpec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(frames: dict[str, pd.DataFrame], patients: list[str], y: np.ndarray) -> MultimodalDataset:
    return MultimodalDataset.from_frames({k: v.astype(np.float32) for k, v in frames.items()}, patients, y)


def _federated_fold(frames, patients, y, site, train, n_outputs, task, cfg: FederatedConfig, fold: int, workdir: Path):
    """Train the shared model with Flower (one process per site); returns (final weights, bytes per round)."""
    address = f"127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    procs = []
    ref = _dataset(frames, patients, y)
    initial = build_model(ref, n_outputs, task, cfg.model)
    from flows.federated.sites import get_weights

    for k in range(cfg.sites.n_sites):
        rows = train[site[train] == k]
        payload = SitePayload(k, _dataset(frames, [patients[i] for i in rows], y[rows]), n_outputs, task, cfg.model,
                              cfg.local_epochs, seed=cfg.model.seed + 97 * fold)
        path = workdir / f"fold{fold}_site{k}.pkl"
        save_payload(payload, path)
        procs.append(ctx.Process(target=run_site, args=(str(path), address), daemon=True))
    for p in procs:
        p.start()
    try:
        strategy = make_strategy(cfg.strategy, get_weights(initial), cfg.sites.n_sites, cfg.local_epochs,
                                 cfg.proximal_mu, cfg.dp_noise, cfg.dp_clip)
        serve(address, strategy, cfg.rounds)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if strategy.final is None or bad:
        raise FusionDataError(f"federated fold {fold}: training did not finish (site exit codes {bad})")
    set_weights(initial, strategy.final)
    return initial, strategy.bytes_per_round


def simulate(frames: dict[str, pd.DataFrame], labels: pd.Series, cfg: FederatedConfig | None = None) -> dict:
    """Centralised vs federated vs each site alone: CV AUC on held-out patients of every site.

    `frames`: modality -> patient-indexed feature table; `labels`: patient -> class. The cohort is split
    into `cfg.sites.n_sites` sites with different label mixes and missing-modality rates."""
    cfg = cfg or FederatedConfig()
    t0 = time.perf_counter()
    labels = labels.dropna()
    patients = sorted(set(labels.index.astype(str)) & set().union(*[set(f.index.astype(str)) for f in frames.values()]))
    codes, classes = pd.factorize(labels.reindex(patients), sort=True)
    y = codes.astype(np.int64)
    task, n_outputs = ("binary", 1) if len(classes) == 2 else ("multiclass", len(classes))
    site = assign_sites(y, cfg.sites)
    site_of = pd.Series(site, index=patients)
    anchor = max(frames, key=lambda k: len(frames[k].index.intersection(patients)))
    frames = apply_site_missingness({k: v.loc[v.index.intersection(patients)] for k, v in frames.items()},
                                    site_of, cfg.sites, anchor)
    total_epochs = cfg.rounds * cfg.local_epochs
    res: dict[str, list] = {"centralised": [], "federated": [], **{f"site{k}": [] for k in range(cfg.sites.n_sites)}}
    bytes_rounds: list[int] = []
    folds = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.sites.seed).split(np.zeros(len(y)), y)
    with tempfile.TemporaryDirectory(prefix="fusionrx-fed-") as tmp:
        for fold, (train, test) in enumerate(folds):
            # shared standardisation from per-site sums (no patient row leaves a site)
            stats = combine_sums([feature_sums(frames, [patients[i] for i in train[site[train] == k]])
                                  for k in range(cfg.sites.n_sites)])
            std = standardise(frames, stats)
            ds = _dataset(std, patients, y)
            for name, rows in [("centralised", train)] + [(f"site{k}", train[site[train] == k])
                                                          for k in range(cfg.sites.n_sites)]:
                model = build_model(ds, n_outputs, task, cfg.model)
                local_fit(model, ds, rows, cfg.model, total_epochs, seed=cfg.model.seed + fold)
                res[name].append(roc_auc(y[test], predict(model, ds, test)))
            model, b = _federated_fold(std, patients, y, site, train, n_outputs, task, cfg, fold, Path(tmp))
            res["federated"].append(roc_auc(y[test], predict(model, ds, test)))
            bytes_rounds.extend(b)
    mean = {k: float(np.nanmean(v)) for k, v in res.items()}
    return {"centralised_auc": mean["centralised"], "federated_auc": mean["federated"],
            "site_auc": [mean[f"site{k}"] for k in range(cfg.sites.n_sites)],
            "bytes_per_round": int(np.mean(bytes_rounds)) if bytes_rounds else 0,
            "folds": {k: [round(x, 4) for x in v] for k, v in res.items()},
            "sites": {"n_patients": np.bincount(site, minlength=cfg.sites.n_sites).tolist(),
                      "class_mix": pd.crosstab(site, y).to_numpy().tolist(), "classes": [str(c) for c in classes],
                      "extra_missing_rate": site_missing_rates(cfg.sites).round(3).tolist(), "anchor_modality": anchor},
            "modalities": list(frames), "strategy": cfg.strategy, "rounds": cfg.rounds,
            "local_epochs": cfg.local_epochs, "cv_folds": cfg.folds, "wall_s": round(time.perf_counter() - t0, 1),
            "config": asdict(cfg)}
