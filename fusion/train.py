"""Training and prediction for FusionModel (CUDA with the fusion.device mixed-precision policy, CPU in float32)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fusion.data import MultimodalDataset
from fusion.device import autocast, resolve_device
from fusion.errors import FusionConfigError, FusionDataError
from fusion.heads import SURVIVAL_TASKS, outputs_to_predictions, task_loss
from fusion.model import FusionModel


@dataclass
class TrainConfig:
    """Optimisation settings: AdamW for ``epochs`` passes, full batch when ``batch_size`` is None.

    ``modality_dropout`` None keeps the model's own rate; ``device`` None picks CUDA when
    available, else CPU; ``amp`` turns on mixed precision on CUDA only (``fusion.device.autocast``:
    bfloat16, no gradient scaling), a no-op on CPU;
    ``num_threads`` sets torch's CPU threads during fit/predict only (restored afterwards;
    1 is fastest for tiny models on a busy machine), None leaves them as they are.
    ``max_instances``: at each training step every slide bag is cut to that many of its instances, drawn at
    random (random instance sampling, a usual MIL regulariser: the attention pooling sees varied subsets;
    predictions always use every instance); None keeps whole bags.
    ``early_stopping``: hold out that fraction of the training patients (random, from ``seed``; stratified by
    class for classification), train on the rest and keep the weights of the epoch with the lowest loss on the
    held-out part (checked after every epoch); None trains on every patient for ``epochs`` epochs.
    """

    epochs: int = 150
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int | None = None
    modality_dropout: float | None = None
    seed: int = 0
    device: str | None = None
    amp: bool = True
    grad_clip: float | None = 5.0
    num_threads: int | None = None
    max_instances: int | None = None
    early_stopping: float | None = None

    def __post_init__(self) -> None:
        if self.early_stopping is not None and not 0.0 < self.early_stopping < 0.5:
            raise FusionConfigError(f"TrainConfig: early_stopping must be None or in (0, 0.5), got {self.early_stopping}")
        if self.max_instances is not None and self.max_instances < 1:
            raise FusionConfigError(f"TrainConfig: max_instances must be None or >= 1, got {self.max_instances}")
        if self.epochs < 1 or self.lr <= 0 or (self.batch_size is not None and self.batch_size < 1):
            raise FusionConfigError(f"TrainConfig: need epochs >= 1, lr > 0, batch_size None or >= 1; got {self}")


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Temporarily use ``n`` torch CPU threads (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded to ``seed``; the caller's RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _labels(dataset: MultimodalDataset, idx: np.ndarray, task: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if dataset.y is None:
        raise FusionDataError("fit: dataset has no labels y")
    if task in SURVIVAL_TASKS:
        if not isinstance(dataset.y, tuple):
            raise FusionDataError(f"fit: task '{task}' needs y = (time, event)")
        return (dataset.y[0][idx], dataset.y[1][idx])
    if isinstance(dataset.y, tuple):
        raise FusionDataError(f"fit: task '{task}' needs a label tensor, got (time, event)")
    return dataset.y[idx]


RAGGED_PREDICT_BATCH = 32  # patients per forward pass when slide bags are ragged (padding per chunk)


def _slice_batch(batch: dict, rows: torch.Tensor) -> dict:
    return {
        m: {k: (None if v is None else v.index_select(0, rows)) for k, v in parts.items()} for m, parts in batch.items()
    }


def _slice_labels(y: torch.Tensor | tuple, rows: torch.Tensor) -> torch.Tensor | tuple:
    if isinstance(y, tuple):
        return tuple(t.index_select(0, rows) for t in y)
    return y.index_select(0, rows)


def fit(
    model: FusionModel,
    dataset: MultimodalDataset,
    train_idx: Sequence[int] | np.ndarray,
    config: TrainConfig | None = None,
    extra_loss: Callable[[FusionModel], torch.Tensor] | None = None,
) -> FusionModel:
    """Train ``model`` on patients ``train_idx`` of ``dataset`` (deterministic given ``config.seed``).

    ``extra_loss(model)``, when given, is added to the task loss at every step (e.g. FedProx's
    proximal term toward the global weights).

    Patients with none of the model's modalities carry no signal and are left out of the
    loss. The model's ``fallback_prediction`` is set to the training-fold prior: class
    prevalence (binary: P(y=1); multiclass: class frequencies), the mean target
    (regression) or the mean training log-hazard (survival); ``predict`` returns it for
    patients lacking every modality of the model (e.g. a 'single' baseline's patients
    without that modality). The caller's RNG state is left untouched.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    idx = np.asarray(train_idx, dtype=np.int64).reshape(-1)
    has_any = dataset.presence(model.modalities)[torch.from_numpy(idx)].any(dim=1).numpy()
    rows = idx[has_any]
    if rows.size == 0:
        raise FusionDataError(f"fit: no training patient has any of the modalities {model.modalities}")
    y_all = _labels(dataset, idx, model.task)
    y_rows = _labels(dataset, rows, model.task)

    model.to(device)
    if config.modality_dropout is not None:
        model.modality_dropout = float(config.modality_dropout)
    if model.task == "regression":
        y_rows = _standardise_targets(model, y_rows, device)
    held = _early_stopping_rows(model.task, y_rows, config) if config.early_stopping else None
    if held is not None:
        keep = np.setdiff1d(np.arange(len(rows)), held)
        val = (rows[held], _slice_labels(y_rows, torch.from_numpy(held)))
        rows, y_rows = rows[keep], _slice_labels(y_rows, torch.from_numpy(keep))
    else:
        val = None
    _optimise(model, dataset, rows, y_rows, config, device, extra_loss, val)
    model.eval()
    _set_fallback(model, dataset, idx, rows, y_all, config, device)
    return model


def _early_stopping_rows(task: str, y: torch.Tensor | tuple, config: TrainConfig) -> np.ndarray | None:
    """Positions (into the training rows) of the held-out early-stopping part: ``config.early_stopping`` of
    them at random, per class for classification, by event status for survival; None when too few rows."""
    labels = y[1].numpy().astype(int) if isinstance(y, tuple) else (
        y.numpy().astype(int) if task in ("binary", "multiclass") else np.zeros(len(y), dtype=int))
    if len(labels) < 10:
        return None
    rng = np.random.default_rng(config.seed + 7919)
    held = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = int(round(config.early_stopping * len(pos)))
        if 0 < k < len(pos):
            held.append(rng.choice(pos, size=k, replace=False))
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    if task == "survival" and isinstance(y, tuple) and int(y[1][out].sum()) < 2:
        return None  # a held-out part without two events cannot rank anything
    return out if out.size >= 2 else None


def _standardise_targets(model: FusionModel, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Store the training targets' mean / std in the model and return the standardised targets."""
    y2 = y.reshape(len(y), -1)
    mean, std = y2.mean(dim=0), y2.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    model.target_mean.copy_(mean.to(device))
    model.target_std.copy_(std.to(device))
    return ((y2 - mean) / std).reshape(y.shape)


def _optimise(
    model: FusionModel,
    dataset: MultimodalDataset,
    rows: np.ndarray,
    y_rows: torch.Tensor | tuple,
    config: TrainConfig,
    device: torch.device,
    extra_loss: Callable[[FusionModel], torch.Tensor] | None,
    val: tuple[np.ndarray, torch.Tensor | tuple] | None = None,
) -> None:
    """AdamW for ``config.epochs`` passes over patients ``rows``, inside an RNG fork seeded with ``config.seed``;
    with ``val`` (held-out rows, labels) the weights of the epoch with the lowest held-out loss are kept."""
    n = len(rows)
    step = n if config.batch_size is None else int(config.batch_size)
    ragged = any(dataset.modalities[m].is_ragged for m in model.modalities)
    # ragged bags are padded per mini-batch (to that batch's longest bag), not once for the whole fold
    batch = None if ragged and step < n else dataset.to_batch(rows, model.modalities, device=device)
    y_dev = tuple(t.to(device) for t in y_rows) if isinstance(y_rows, tuple) else y_rows.to(device)
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices), cpu_threads(config.num_threads):
        torch.manual_seed(config.seed)
        order_gen = torch.Generator().manual_seed(config.seed)
        # foreach: one vectorised update over all parameters, the same arithmetic as the per-tensor loop that is
        # otherwise the CPU default (~10% of a small network's step)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        model.train()
        bags = [m for m in model.modalities if dataset.modalities[m].is_ragged]
        best, best_state = float("inf"), None
        for _ in range(config.epochs):
            for sub, y_sub in _epoch_batches(model, dataset, rows, batch, y_dev, step, order_gen, device):
                if config.max_instances is not None and bags:
                    sub = sample_instances(sub, bags, config.max_instances, order_gen)
                _train_step(model, opt, sub, y_sub, config, device, extra_loss)
            if val is not None:
                loss = _held_out_loss(model, dataset, val, device)
                if loss < best - 1e-6:
                    best, best_state = loss, {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.train()
        if best_state is not None:
            model.load_state_dict(best_state)


@torch.no_grad()
def _held_out_loss(model: FusionModel, dataset: MultimodalDataset, val: tuple, device: torch.device) -> float:
    """The task loss of the held-out early-stopping rows (eval mode, every instance, in chunks for bags)."""
    model.eval()
    rows, y = val
    out = []
    for start in range(0, len(rows), RAGGED_PREDICT_BATCH):
        out.append(model(dataset.to_batch(rows[start:start + RAGGED_PREDICT_BATCH], model.modalities, device=device)))
    y_dev = tuple(t.to(device) for t in y) if isinstance(y, tuple) else y.to(device)
    return float(task_loss(model.task, torch.cat(out).float(), y_dev))


def sample_instances(batch: dict, bags: Sequence[str], k: int, gen: torch.Generator) -> dict:
    """``batch`` with each bag modality cut to at most ``k`` instances per patient, drawn without replacement
    among its valid (mask True) instances; bags of at most ``k`` keep all of theirs. Vectorised: random keys,
    padding keyed last, top-k per row."""
    out = dict(batch)
    for m in bags:
        x, mask = batch[m]["values"], batch[m]["mask"]
        if mask is None or x.dim() != 3 or x.shape[1] <= k:
            continue
        keys = torch.rand(mask.shape, generator=gen).to(x.device).masked_fill(~mask.to(torch.bool), 2.0)
        pick = keys.topk(k, dim=1, largest=False).indices
        out[m] = {**batch[m], "values": x.gather(1, pick[..., None].expand(-1, -1, x.shape[2])),
                  "mask": mask.gather(1, pick)}
    return out


def _epoch_batches(
    model: FusionModel,
    dataset: MultimodalDataset,
    rows: np.ndarray,
    batch: dict | None,
    y_dev: torch.Tensor | tuple,
    step: int,
    order_gen: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[dict, torch.Tensor | tuple]]:
    """One epoch's (inputs, labels) batches of ``step`` patients: the whole fold, or a shuffled partition.

    ``batch`` holds the fold's inputs on ``device``; None (ragged bags) builds each mini-batch on demand.
    """
    n = len(rows)
    order = torch.arange(n) if step >= n else torch.randperm(n, generator=order_gen)
    for start in range(0, n, step):
        sel = order[start : start + step].to(device)
        if batch is None:
            sub = dataset.to_batch(rows[sel.cpu().numpy()], model.modalities, device=device)
        else:
            sub = batch if step >= n else _slice_batch(batch, sel)
        yield sub, (y_dev if step >= n else _slice_labels(y_dev, sel))


def _train_step(
    model: FusionModel,
    opt: torch.optim.Optimizer,
    sub: dict,
    y_sub: torch.Tensor | tuple,
    config: TrainConfig,
    device: torch.device,
    extra_loss: Callable[[FusionModel], torch.Tensor] | None,
) -> None:
    """One optimiser step: forward under the mixed-precision policy, task (+ extra) loss, clipped gradients."""
    with autocast(device, config.amp):
        out = model(sub)
    loss = task_loss(model.task, out, y_sub)
    if extra_loss is not None:
        loss = loss + extra_loss(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()


def _set_fallback(
    model: FusionModel,
    dataset: MultimodalDataset,
    idx: np.ndarray,
    rows: np.ndarray,
    y_all: torch.Tensor | tuple,
    config: TrainConfig,
    device: torch.device,
) -> None:
    """Set ``model.fallback_prediction`` to the training-fold prior of patients ``idx`` (see ``fit``)."""
    task = model.task
    if task == "binary":
        fallback = y_all.float().mean().reshape(1)
    elif task == "multiclass":
        fallback = torch.bincount(y_all.long(), minlength=model.n_outputs).float() / len(idx)
    elif task == "regression":
        fallback = y_all.float().reshape(len(idx), -1).mean(dim=0)
    else:
        with cpu_threads(config.num_threads):
            risk = predict(model, dataset, rows, apply_fallback=False)
        fallback = torch.as_tensor(risk.mean(), dtype=torch.float32).reshape(1)
    model.fallback_prediction.zero_()
    model.fallback_prediction[: fallback.numel()] = fallback.to(device)


@torch.no_grad()
def predict(
    model: FusionModel,
    dataset: MultimodalDataset,
    idx: Sequence[int] | np.ndarray,
    batch_size: int = 1024,
    apply_fallback: bool = True,
    raw: bool = False,
) -> np.ndarray:
    """Predictions for patients ``idx``: P(y=1) [n] (binary), class probabilities [n, C] (multiclass),
    targets [n] / [n, k] in original units (regression), log-hazard risk [n] (survival; higher = worse).

    Patients with none of the model's modalities get the training-fold prior set by ``fit``
    (prevalence / mean target / mean training risk). ``raw``: the model's outputs [n, n_outputs]
    before any transform (e.g. the NLL head's hazard logits), without the fallback.
    """
    model.eval()
    if any(dataset.modalities[m].is_ragged for m in model.modalities):
        batch_size = min(batch_size, RAGGED_PREDICT_BATCH)  # ragged bags are padded per chunk
    device = next(model.parameters()).device
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    preds = []
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        out = model(dataset.to_batch(chunk, model.modalities, device=device))
        p = out.float() if raw else outputs_to_predictions(model.task, out)
        if model.task == "regression" and not raw:
            k = model.n_outputs
            p = (p.reshape(-1, k) * model.target_std + model.target_mean).reshape(p.shape)
        preds.append(p.float().cpu())
    if not preds:
        multi = raw or (model.n_outputs > 1 and model.task == "multiclass")
        return np.zeros((0, model.n_outputs) if multi else (0,))
    pred = torch.cat(preds, dim=0)
    if apply_fallback and not raw:
        has_any = dataset.presence(model.modalities)[torch.from_numpy(idx)].any(dim=1)
        fb = model.fallback_prediction.float().cpu()
        fb = fb[0] if pred.dim() == 1 else fb[: pred.shape[1]]
        pred[~has_any] = fb
    return pred.numpy().astype(np.float64)
