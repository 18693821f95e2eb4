"""Stage: the multimodal dataset of the cohort and the model evidence (gradient x input of an expression-only
diagnosis model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fusion.attribution import feature_attribution
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


def model_evidence(frames: dict[str, pd.DataFrame], bags: dict[str, np.ndarray], labels: pd.Series,
                   cfg: dict) -> pd.Series:
    """Model evidence for target ranking: |gradient x input| per gene of a diagnosis model that sees only the
    expression it attributes (an expression encoder and head, strategy 'single', trained on every labelled
    patient with expression); empty without expression. Not a CV experiment: the run's CV experiments are
    specs over the store (flows/stages/run_specs.py).

    Only ``frames['expression']`` and ``labels`` are read: ``bags`` and the other frames (imaging, slides,
    spatial) are ignored, so a gene's evidence never moves when a CT, a PET or a slide is damaged, missing or
    re-encoded (a fusion model's attributions would: its expression weights are trained beside the other
    modalities). Patients without expression are left out of the training. Seeded by the caller
    (``fusion.train.seeded``): the same expression and labels give the same series."""
    if "expression" not in frames:
        return pd.Series(dtype=float)
    expression = frames["expression"]
    labels = labels[labels.index.isin(expression.index)]
    classes = sorted(labels.unique())
    if len(classes) < 2:
        return pd.Series(dtype=float)
    ds = build_dataset({"expression": expression}, {}, list(labels.index),
                       labels.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64))
    task = "binary" if len(classes) == 2 else "multiclass"
    tc = TrainConfig(epochs=cfg["fusion_epochs"], lr=cfg["fusion_lr"], weight_decay=cfg["fusion_weight_decay"],
                     batch_size=cfg.get("fusion_batch_size"), modality_dropout=0.0, seed=cfg["seed"],
                     num_threads=None if torch.cuda.is_available() else cfg["torch_cpu_threads"])
    all_idx = np.arange(ds.n_patients)
    std = ds.standardise(all_idx)
    model = FusionModel.for_dataset(std, ["expression"], "single", 1 if task == "binary" else len(classes),
                                    embed_dim=cfg["embed_dim"],
                                    encoder_factories={"expression": encoder_factories(cfg)["expression"]},
                                    modality_dropout=0.0, task=task, hidden=cfg["fusion_hidden"],
                                    dropout=cfg["fusion_dropout"])
    fit(model, std, all_idx, tc)
    attr = feature_attribution(model, std, "expression", all_idx)
    return pd.Series(attr, index=std.modalities["expression"].feature_names, name="model")
