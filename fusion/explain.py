"""Per-patient explanations of a FusionModel: exact modality Shapley values and MIL attention over a bag.

- ``exact_shapley``: Shapley values of any set function by enumerating every coalition (2^M calls at most,
  each coalition evaluated once).
- ``fusion_model_shapley``: the model's (temperature-scaled) probability of one class, or the survival risk,
  split exactly over the modalities the patient has; a modality left out of a coalition is marked absent
  (``FusionModel.forward(batch, present=mask)``), i.e. the model sees its own missing-modality input, so the
  values add up to the prediction: ``base_value + sum(values) == probability``.
- ``input_attribution``: Captum gradient x input of one patient's prediction w.r.t. one modality's inputs
  (per feature; per instance and feature for bags), the per-patient view of ``fusion.attribution``.
- ``bag_attention``: the attention weights an attention-MIL encoder (``imaging.mil.GatedAttentionMIL`` or any
  module with ``attention(x, mask)``) gives each instance of one patient's bag, in the bag's order.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fusion.data import MultimodalDataset
from fusion.errors import FusionConfigError, FusionDataError
from fusion.heads import SURVIVAL_TASKS, outputs_to_predictions
from fusion.attribution import input_x_gradient
from fusion.model import FusionModel


def exact_shapley(value: Callable[[frozenset[str]], float], players: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Exact Shapley values of the game ``value`` over ``players``: (value(empty set), {player: phi}).

    phi_i = sum over coalitions S without i of |S|! (n - |S| - 1)! / n! * (value(S + {i}) - value(S)); each
    coalition's value is computed once. Efficiency holds: value(empty) + sum(phi) == value(all players) up to
    float rounding. FusionDataError when a player is named twice.
    """
    players = list(players)
    if len(set(players)) != len(players):
        raise FusionDataError(f"exact_shapley: players must be unique, got {players}")
    n = len(players)
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s))
        return cache[s]

    base = v(frozenset())
    phi = {p: 0.0 for p in players}
    for i, p in enumerate(players):
        others = players[:i] + players[i + 1 :]
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, k):
                s = frozenset(coalition)
                phi[p] += weight * (v(s | {p}) - v(s))
    return base, phi


def _attention_module(encoder: nn.Module) -> nn.Module | None:
    """The encoder itself or its first submodule with an ``attention(x, mask)`` method (e.g. a projected MIL)."""
    for module in encoder.modules():
        if callable(getattr(module, "attention", None)):
            return module
    return None


def _patient_batch(model: FusionModel, dataset: MultimodalDataset, index: int) -> dict:
    if not 0 <= int(index) < dataset.n_patients:
        raise FusionDataError(f"patient index {index} out of range: the dataset has {dataset.n_patients} patients")
    device = next(model.parameters()).device
    return dataset.to_batch([int(index)], model.modalities, device=device)


@torch.no_grad()
def fusion_model_shapley(model: FusionModel, dataset: MultimodalDataset, index: int, *, target: int | None = None,
                         temperature: float = 1.0) -> dict:
    """Exact Shapley values of patient ``index``'s prediction over the modalities the patient has.

    The value of a coalition S is the model's output with only S marked present (the others get the model's
    own missing-modality input): P(class ``target``) = softmax(logits / temperature)[target] (multiclass) or
    sigmoid(logit / temperature) resp. 1 - that (binary), and the risk (log-hazard; -sum of survival for
    'survival_nll') for survival models (``temperature`` then unused). ``target`` None takes the predicted
    class. All 2^M coalitions go through the model in one batch (model in eval mode). Pass the dataset as the
    model saw it (standardised).

    Returns ``{"base_value": value of the empty coalition, "values": {modality: phi} for every modality of the
    model (0.0 for those the patient lacks), "predicted": class id (None for survival), "probability": the
    full-coalition value}``; ``base_value + sum(values) == probability`` to float precision.
    Raises FusionDataError (index out of range, patient without any modality of the model) and
    FusionConfigError (regression model, bad target or temperature).
    """
    if model.task == "regression":
        raise FusionConfigError("fusion_model_shapley: regression models are not supported (diagnosis or survival)")
    if not temperature > 0:
        raise FusionConfigError(f"fusion_model_shapley: temperature must be > 0, got {temperature}")
    model.eval()
    batch = _patient_batch(model, dataset, index)
    present = model.presence(batch)[0]
    players = [m for j, m in enumerate(model.modalities) if bool(present[j])]
    if not players:
        raise FusionDataError(f"fusion_model_shapley: patient '{dataset.patients[index]}' has none of the model's "
                              f"modalities {model.modalities}")
    cols = [model.modalities.index(m) for m in players]
    n_masks = 2 ** len(players)
    bits = torch.tensor([[(k >> i) & 1 for i in range(len(players))] for k in range(n_masks)], dtype=torch.bool)
    masks = torch.zeros(n_masks, len(model.modalities), dtype=torch.bool)
    masks[:, cols] = bits
    device = next(model.parameters()).device
    rows = torch.zeros(n_masks, dtype=torch.long, device=device)
    repeated = {m: {k: (None if t is None else t.index_select(0, rows)) for k, t in parts.items()}
                for m, parts in batch.items()}
    out = model(repeated, present=masks.to(device)).double()

    predicted: int | None
    if model.task in SURVIVAL_TASKS:
        values = outputs_to_predictions(model.task, out).double().reshape(n_masks)
        predicted = None
    elif model.task == "binary":
        p1 = torch.sigmoid(out[:, 0] / temperature)
        predicted = int(p1[-1] >= 0.5)
        cls = predicted if target is None else int(target)
        if cls not in (0, 1):
            raise FusionConfigError(f"fusion_model_shapley: binary model, target must be 0 or 1, got {target}")
        values = p1 if cls == 1 else 1.0 - p1
    else:
        probs = torch.softmax(out / temperature, dim=1)
        predicted = int(probs[-1].argmax())
        cls = predicted if target is None else int(target)
        if not 0 <= cls < probs.shape[1]:
            raise FusionConfigError(f"fusion_model_shapley: target {target} outside the model's {probs.shape[1]} classes")
        values = probs[:, cls]
    by_mask = {frozenset(p for i, p in enumerate(players) if (k >> i) & 1): float(values[k]) for k in range(n_masks)}
    base, phi = exact_shapley(by_mask.__getitem__, players)
    return {"base_value": base, "values": {m: float(phi.get(m, 0.0)) for m in model.modalities},
            "predicted": predicted, "probability": by_mask[frozenset(players)]}


@torch.no_grad()
def bag_attention(model: FusionModel, dataset: MultimodalDataset, index: int, modality: str = "wsi") -> np.ndarray:
    """MIL attention weights [T] (float64, sum 1) of patient ``index``'s bag of ``modality``, in the bag's
    instance order (for slides: the order of the tiles in STORE/wsi/<patient>.h5).

    Pass the dataset as the model saw it (standardised). FusionDataError when the model has no such bag
    modality, the patient has no bag, or the modality's encoder has no attention (e.g. mean pooling or an
    instance-level strategy's per-instance encoder).
    """
    if modality not in model.modalities or modality not in model.bag_modalities:
        raise FusionDataError(f"bag_attention: model has no bag modality '{modality}'; its bags: {model.bag_modalities}")
    encoder = _attention_module(model.encoders[modality])
    if encoder is None or model.instance_level:
        raise FusionDataError(f"bag_attention: the encoder of '{modality}' ({type(model.encoders[modality]).__name__})"
                              " has no MIL attention")
    model.eval()
    batch = _patient_batch(model, dataset, index)[modality]
    if not bool(batch["present"][0]):
        raise FusionDataError(f"bag_attention: patient '{dataset.patients[index]}' has no '{modality}' bag")
    mask = batch["mask"][0]
    weights = encoder.attention(batch["values"], batch["mask"])[0]
    return weights[mask].double().cpu().numpy()


def input_attribution(model: FusionModel, dataset: MultimodalDataset, index: int, modality: str, *,
                      target: int | None = None) -> np.ndarray:
    """Signed gradient x input (Captum InputXGradient) of patient ``index``'s output w.r.t. its ``modality``
    inputs: [d] for a vector modality, [T, d] for a bag (its instances in bag order). The output is the logit
    of class ``target`` (default: the predicted class; binary: the one logit), or the log-hazard. Pass the
    dataset as the model saw it (standardised): 'input' is then in training units. FusionDataError when the
    model lacks the modality or the patient has none."""
    if modality not in model.modalities:
        raise FusionDataError(f"input_attribution: model has no modality '{modality}'; it has {model.modalities}")
    model.eval()
    batch = _patient_batch(model, dataset, index)
    if not bool(batch[modality]["present"][0]):
        raise FusionDataError(f"input_attribution: patient '{dataset.patients[index]}' has no '{modality}'")
    gxi = input_x_gradient(model, batch, modality, target)[0]
    mask = batch[modality]["mask"]
    if gxi.dim() == 2 and mask is not None:
        gxi = gxi[mask[0]]
    return gxi.detach().double().cpu().numpy()
