"""Stage: assemble the multimodal dataset and run the fusion experiments (CV of every strategy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fusion.attribution import feature_attribution
from fusion.cv import compare_strategies
from fusion.data import ModalityData, MultimodalDataset
from fusion.model import FusionModel
from fusion.train import TrainConfig, fit


def slide_bags(features_h5: dict[str, str]) -> dict[str, Any]:
    """Load every slide's MIL bag: patient -> tile features + cellularity [T, d+1] (coords stay in the HDF5)."""
    from pathlib import Path

    from flows.stages.pathology import slide_bag

    return {pid: slide_bag(Path(p)) for pid, p in features_h5.items()}


def bag_modality(name: str, bags: dict[str, np.ndarray], patients: list[str]) -> ModalityData:
    """Per-patient bags [T_i, d] as ragged bags (absent patients: empty); padding happens only inside a
    mini-batch, never to the largest slide of the cohort."""
    return ModalityData.from_bags(name, [bags.get(pid) for pid in patients])


def build_dataset(frames: dict[str, pd.DataFrame], bags: dict[str, np.ndarray], patients: list[str],
                  y: object) -> MultimodalDataset:
    """Dataset over ``patients`` (those with at least one modality are kept) with labels ``y`` aligned to
    ``patients`` (class ids, or a (time, event) pair for survival)."""
    have = set().union(*[set(f.index) for f in frames.values()], set(bags))
    keep = np.array([p in have for p in patients])
    patients = [p for p, k in zip(patients, keep) if k]
    y = tuple(np.asarray(v)[keep] for v in y) if isinstance(y, tuple) else np.asarray(y)[keep]
    ds = MultimodalDataset.from_frames(frames, patients, y)
    mods = dict(ds.modalities)
    for name, m in mods.items():
        if name in frames:
            m.feature_names = [str(c) for c in frames[name].columns]
    if bags:
        mods["wsi"] = bag_modality("wsi", bags, patients)
    return MultimodalDataset(patients=patients, modalities=mods, y=ds.y)


def encoder_factories(cfg: dict) -> dict[str, Any]:
    """Per-modality encoders: gated-attention MIL for slide bags, self-normalising MLP for expression."""
    from imaging.mil import GatedAttentionMIL
    from omics.encoders import SelfNormalizingMLP

    e = cfg["embed_dim"]
    return {
        "wsi": lambda d: GatedAttentionMIL(d, embed_dim=e, attn_dim=e),
        "expression": lambda d: SelfNormalizingMLP(d, hidden=16, embed_dim=e, dropout=0.2),
    }


PARTS = ("diagnosis", "survival", "evidence")


def run_fusion_experiments(frames: dict[str, pd.DataFrame], bags: dict[str, np.ndarray], labels: pd.Series,
                           cfg: dict, survival: pd.DataFrame | None = None,
                           parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """CV (same folds for all) of each fusion strategy and each single modality on the diagnosis (and,
    given ``survival`` with os_time_days/os_event, on overall survival); expression attribution.
    ``parts`` selects which of the three to compute (flows/stages/fusion_parallel.py splits them)."""
    classes = sorted(labels.unique())
    ds = build_dataset(frames, bags, list(labels.index),
                       labels.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64))
    task = "binary" if len(classes) == 2 else "multiclass"
    tc = TrainConfig(epochs=cfg["fusion_epochs"], lr=cfg["fusion_lr"], weight_decay=cfg["fusion_weight_decay"],
                     batch_size=cfg.get("fusion_batch_size"),
                     modality_dropout=cfg["modality_dropout"], seed=cfg["seed"],
                     num_threads=None if torch.cuda.is_available() else cfg["torch_cpu_threads"])
    model_kwargs = {"hidden": cfg["fusion_hidden"], "dropout": cfg["fusion_dropout"]}
    singles = [m for m in cfg["single_modalities"] if m in ds.modality_names]
    factories = {k: v for k, v in encoder_factories(cfg).items() if k in ds.modality_names}
    table, results = pd.DataFrame(), {}
    if "diagnosis" in parts:
        table, results = compare_strategies(ds, list(cfg["strategies"]), singles, task=task,
                                            n_splits=cfg["cv_splits"], n_repeats=cfg["cv_repeats"],
                                            seed=cfg["seed"], train_config=tc, encoder_factories=factories,
                                            return_results=True, model_kwargs=model_kwargs)
        table.insert(table.columns.get_loc("metric"), "task", f"diagnosis ({task})")
    if survival is not None and cfg["survival_experiments"] and "survival" in parts:
        sds = build_dataset(frames, bags, list(survival.index),
                            (survival["os_time_days"].to_numpy(np.float32), survival["os_event"].to_numpy(bool)))
        s_singles = [m for m in cfg["single_modalities"] if m in sds.modality_names]
        s_factories = {k: v for k, v in encoder_factories(cfg).items() if k in sds.modality_names}
        s_table = compare_strategies(sds, list(cfg["strategies"]), s_singles, task="survival",
                                     n_splits=cfg["cv_splits"], n_repeats=cfg["cv_repeats"], seed=cfg["seed"],
                                     train_config=tc, encoder_factories=s_factories, model_kwargs=model_kwargs)
        s_table.insert(s_table.columns.get_loc("metric"), "task", "overall survival (cox)")
        table = pd.concat([table, s_table], ignore_index=True)

    # model evidence: attention fusion trained on every patient, |gradient x input| per expression gene
    model_evidence = pd.Series(dtype=float)
    if "expression" in ds.modality_names and "evidence" in parts:
        all_idx = np.arange(ds.n_patients)
        std = ds.standardise(all_idx)
        model = FusionModel.for_dataset(std, ds.modality_names, "attention", 1 if task == "binary" else len(classes),
                                        embed_dim=cfg["embed_dim"], encoder_factories=factories,
                                        modality_dropout=cfg["modality_dropout"], task=task, **model_kwargs)
        fit(model, std, all_idx, tc)
        attr = feature_attribution(model, std, "expression", all_idx)
        model_evidence = pd.Series(attr, index=std.modalities["expression"].feature_names, name="model")
    counts = {m: int(ds.modalities[m].present.sum()) for m in ds.modality_names}
    return {"experiments": table, "model_evidence": model_evidence, "classes": classes,
            "n_patients": ds.n_patients, "modality_counts": counts,
            "oof": {k: r.oof for k, r in results.items()}}
