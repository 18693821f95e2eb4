"""Activity model linking molecules to targets: molecule GNN x target encoder -> pKd / pChEMBL (-log10 M).

The drug side is the GINE ``MoleculeGNN`` of ``molecules.gnn`` (its pooled atom states, projected);
the target side a ``TargetEncoder`` (learned embedding, k-mer composition, sequence CNN). A pair is
scored by an MLP over [drug, target, drug * target]. Each step encodes only the unique drugs and
targets of its pair batch and indexes them, which keeps CPU training fast on tables such as Davis
(68 drugs x 442 targets, 30,056 pairs). Device-agnostic; the ``fusion.device`` mixed-precision policy
(bfloat16 autocast on CUDA) when ``amp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from fusion.device import autocast
from fusion.errors import MoleculeError
from molecules.dti_data import DTITable
from molecules.gnn import MoleculeGNN, default_device
from molecules.graph import EDGE_DIM, NODE_DIM, smiles_to_graphs
from molecules.protein import TargetEncoder, encode_sequences, kmer_composition

__all__ = ["ActivityConfig", "ActivityModel", "fit_activity", "predict_pairs", "predict_table"]


@dataclass(frozen=True)
class ActivityConfig:
    """Sizes and training settings of an activity model (all recorded in the model file)."""

    hidden: int = 64  # GNN hidden width (drug embedding = 2 * hidden before projection)
    layers: int = 3  # GINE layers
    dim: int = 64  # shared drug / target embedding width
    target_parts: tuple[str, ...] = ("embedding", "kmer")
    drug_embedding: bool = True  # a learned vector per training drug added to its GNN embedding
    head_hidden: int = 256
    dropout: float = 0.1
    epochs: int = 80  # Davis standard fold, all 25,046 train-fold pairs, seed 0: CI 0.868, MSE 0.274 (CPU)
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-4
    # max gradient norm per step (0: none). Unclipped at lr 3e-3, Davis runs on 90 % of the train folds collapsed
    # towards a constant near the one-cycle peak: seed 0 CI 0.836 / MSE 0.408, seed 1 CI 0.500; clipped at 1.0,
    # seed 0 reached CI 0.867 / MSE 0.286 (bench/results_davis.json, "gnn_drop")
    grad_clip: float = 1.0
    id_dropout: float = 0.1  # share of training pairs whose drug / target id is replaced by "unknown"
    max_len: int = 1000  # protein tokens kept for the CNN
    cnn_filters: int = 32
    amp: bool = True  # mixed precision on CUDA (fusion.device.autocast: bfloat16); ignored on CPU
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_parts"] = list(self.target_parts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ActivityConfig":
        d = dict(d)
        d["target_parts"] = tuple(d.get("target_parts", cls.target_parts))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class ActivityModel(nn.Module):
    """GNN(drug) [+ drug id] and TargetEncoder(target) -> MLP over [d, t, d*t] -> standardised activity."""

    def __init__(self, config: ActivityConfig, drugs: Sequence[str], targets: Sequence[str],
                 sequences: dict[str, str] | None = None):
        super().__init__()
        self.config = config
        self.drugs = list(drugs)  # canonical SMILES of the training drugs (vocabulary of the drug ids)
        self.targets = list(targets)
        self.sequences = dict(sequences or {})
        self.version = ""
        self.activity_types: tuple[str, ...] = ()  # what the values it learned were (Kd, IC50 ...)
        self.calibration: np.ndarray | None = None  # sorted |residuals| on a held-out split (molecules.conformal)
        self.drug = MoleculeGNN(NODE_DIM, EDGE_DIM, config.hidden, config.layers)
        self.drug_proj = nn.Linear(2 * config.hidden, config.dim)
        self.drug_id = nn.Embedding(len(self.drugs) + 1, config.dim) if config.drug_embedding else None
        if self.drug_id is not None:
            nn.init.normal_(self.drug_id.weight, std=0.1)
        self.target = TargetEncoder(len(self.targets), config.target_parts, config.dim, config.cnn_filters)
        self.head = nn.Sequential(
            nn.Linear(3 * config.dim, config.head_hidden), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, config.head_hidden // 2), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden // 2, 1),
        )
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def encode_drugs(self, batch: Batch) -> torch.Tensor:
        """(n_drugs, dim) GNN part of the drug embeddings of a batch of molecule graphs."""
        return self.drug_proj(self.drug.embed(batch))

    def score(self, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Standardised activity (n_pairs,) of aligned drug and target embeddings (n_pairs, dim)."""
        return self.head(torch.cat([d, t, d * t], dim=1)).squeeze(-1)


@dataclass
class _Inputs:
    """What the model needs about a list of drugs and a list of targets (pairs index into both)."""

    graphs: list[Data]
    drug_id: torch.Tensor  # (n_drugs,) 1-based drug vocabulary id, 0 = unseen
    target_id: torch.Tensor  # (n_targets,) 1-based target vocabulary id, 0 = unseen
    kmer: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    all_drugs: Batch | None = None  # the whole drug list collated once, when small


def _inputs(model: ActivityModel, smiles: Sequence[str], targets: Sequence[str],
            sequences: dict[str, str] | None, device: torch.device) -> _Inputs:
    """Graphs, vocabulary ids and sequence features; target sequences fall back to the model's."""
    graphs = smiles_to_graphs(smiles)
    dvocab = {s: i + 1 for i, s in enumerate(model.drugs)}
    drug_id = torch.tensor([dvocab.get(g.smiles, 0) for g in graphs], dtype=torch.long)
    tvocab = {t: i + 1 for i, t in enumerate(model.targets)}
    target_id = torch.tensor([tvocab.get(t, 0) for t in targets], dtype=torch.long)
    all_drugs = Batch.from_data_list(graphs).to(device) if len(graphs) <= 256 else None
    parts = model.config.target_parts
    if "kmer" not in parts and "cnn" not in parts:
        if not (target_id > 0).all():
            unseen = [t for t in targets if t not in tvocab][:3]
            raise MoleculeError(f"activity model {model.version}: targets {unseen} were not seen in training "
                                f"and the model has no sequence encoder (target_parts={list(parts)})")
        return _Inputs(graphs, drug_id, target_id, all_drugs=all_drugs)
    seqs = []
    for t in targets:
        s = (sequences or {}).get(t) or model.sequences.get(t)
        if not isinstance(s, str) or not s:
            raise MoleculeError(f"activity model: target {t!r} has no protein sequence; the model's target "
                                f"encoder {list(parts)} needs one (give a 'sequence' column or mapping)")
        seqs.append(s)
    kmer = kmer_composition(seqs) if "kmer" in parts else None
    tokens = encode_sequences(seqs, model.config.max_len) if "cnn" in parts else None
    return _Inputs(graphs, drug_id, target_id, kmer, tokens, all_drugs)


def _forward(model: ActivityModel, inp: _Inputs, drug_idx: torch.Tensor, target_idx: torch.Tensor,
             device: torch.device, drop_drug: torch.Tensor | None = None,
             drop_target: torch.Tensor | None = None) -> torch.Tensor:
    """Standardised predictions for pairs; each unique drug / target of the batch is encoded once.

    ``drop_*`` (n_pairs,) bool: use the "unknown" id for those pairs (training regulariser).
    """
    if inp.all_drugs is not None:
        d = model.encode_drugs(inp.all_drugs)[drug_idx.to(device)]
    else:
        uniq, inv = torch.unique(drug_idx, return_inverse=True)
        batch = Batch.from_data_list([inp.graphs[i] for i in uniq.tolist()]).to(device)
        d = model.encode_drugs(batch)[inv.to(device)]
    if model.drug_id is not None:
        ids = inp.drug_id[drug_idx]
        d = d + model.drug_id((ids if drop_drug is None else torch.where(drop_drug, 0, ids)).to(device))
    t = None
    if inp.kmer is not None or inp.tokens is not None:
        uniq, inv = torch.unique(target_idx, return_inverse=True)
        take = (lambda x: None if x is None else x[uniq].to(device))
        t = model.target.sequence_embedding(take(inp.kmer), take(inp.tokens))[inv.to(device)]
    ids = inp.target_id[target_idx]
    emb = model.target.id_embedding((ids if drop_target is None else torch.where(drop_target, 0, ids)).to(device))
    t = emb if t is None else (t if emb is None else t + emb)
    return model.score(d, t)


def fit_activity(table: DTITable, config: ActivityConfig = ActivityConfig(), device: str | torch.device | None = None,
                 log_every: int = 0) -> ActivityModel:
    """Train an ActivityModel on all pairs of ``table`` (MSE on standardised values, AdamW, one-cycle LR).

    Raises MoleculeError when the table is empty, a SMILES does not parse, or the target encoder
    needs sequences the table does not have. Returns the model in eval mode on ``device``.
    """
    if len(table) == 0:
        raise MoleculeError(f"{table.source}: no training pairs")
    device = default_device(device)
    seqs = None if table.sequences is None else dict(zip(table.targets, table.sequences))
    canonical = [g.smiles for g in smiles_to_graphs(table.smiles)]
    torch.manual_seed(config.seed)
    model = ActivityModel(config, canonical, table.targets, seqs).to(device)
    model.activity_types = tuple(table.activity_types)
    y = torch.tensor(table.value, dtype=torch.float32)
    model.y_mean.fill_(float(y.mean()))
    model.y_std.fill_(float(y.std()) if len(y) > 1 and y.std() > 0 else 1.0)
    y = (y - model.y_mean.cpu()) / model.y_std.cpu()
    inp = _inputs(model, table.smiles, table.targets, seqs, device)
    drug_idx = torch.as_tensor(table.drug_idx, dtype=torch.long)
    target_idx = torch.as_tensor(table.target_idx, dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = max(1, -(-len(y) // config.batch_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  foreach=True)  # vectorised update: same arithmetic as the per-tensor CPU default
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr,
                                                   total_steps=config.epochs * steps_per_epoch)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), config.batch_size):
            idx = order[start:start + config.batch_size]
            drop_d = torch.rand(len(idx), generator=generator) < config.id_dropout
            drop_t = torch.rand(len(idx), generator=generator) < config.id_dropout
            optimiser.zero_grad(set_to_none=True)
            with autocast(device, config.amp):
                pred = _forward(model, inp, drug_idx[idx], target_idx[idx], device, drop_d, drop_t)
            loss = nn.functional.mse_loss(pred.float(), y[idx].to(device))
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if log_every and (epoch + 1) % log_every == 0:
            print(f"[activity] epoch {epoch + 1}/{config.epochs} train mse (standardised) {total / len(y):.4f}",
                  flush=True)
    return model.eval()


@torch.no_grad()
def predict_pairs(model: ActivityModel, smiles: Sequence[str], targets: Sequence[str], drug_idx: np.ndarray,
                  target_idx: np.ndarray, sequences: dict[str, str] | None = None,
                  batch_size: int = 4096) -> np.ndarray:
    """Predicted activity (n_pairs,) in the training units for pairs (smiles[drug_idx], targets[target_idx])."""
    device = next(model.parameters()).device
    model.eval()
    inp = _inputs(model, smiles, targets, sequences, device)
    drug_idx = torch.as_tensor(np.asarray(drug_idx), dtype=torch.long)
    target_idx = torch.as_tensor(np.asarray(target_idx), dtype=torch.long)
    out = []
    for start in range(0, len(drug_idx), batch_size):
        sl = slice(start, start + batch_size)
        with autocast(device, model.config.amp):
            out.append(_forward(model, inp, drug_idx[sl], target_idx[sl], device).float().cpu())
    pred = torch.cat(out) if out else torch.zeros(0)
    return (pred * model.y_std.cpu() + model.y_mean.cpu()).numpy().astype(np.float64)


def predict_table(model: ActivityModel, table: DTITable) -> np.ndarray:
    """Predicted activity for every pair of ``table`` (its sequences used for targets the model lacks)."""
    seqs = None if table.sequences is None else dict(zip(table.targets, table.sequences))
    return predict_pairs(model, table.smiles, table.targets, table.drug_idx, table.target_idx, seqs)
