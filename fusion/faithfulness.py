"""Measured faithfulness of explanations against a planted truth (the generated cohort's truth.json).

An explanation is faithful when it points at what really drives the prediction. With a planted truth that
the model never reads, this is measured, not eyeballed:
- localisation: ROC AUC of the MIL attention of a slide's tiles against "tile centre inside the planted
  tumour" (``tiles_in_tumour``, ``attention_auc``);
- deletion: removing the top-attended instances changes the prediction more than removing as many random
  ones (``deletion_changes``, ``slide_model_deletion``; the ratio of the two mean changes over slides);
- model randomisation (Adebayo et al. 2018): the same network with re-initialised weights
  (``reinitialised``) must give different maps (``rank_correlation`` near 0) with a chance-level AUC;
- modality contributions: a patient whose planted signal is much stronger in one modality should get its
  largest Shapley value there (``planted_evidence``, ``dominant_modality``).
Everything here takes arrays, a FusionModel (or the report's ``SlideAttentionModel``) and plain truth dicts:
reading stores and truth files is the caller's (bench/explain_faithfulness.py).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from fusion.data import MultimodalDataset
from fusion.errors import FusionDataError
from fusion.explain import bag_attention
from fusion.heads import outputs_to_predictions
from fusion.metrics import roc_auc
from fusion.model import FusionModel
from fusion.slide_attention import SlideAttentionModel


def tiles_in_tumour(coords_level0: np.ndarray, tile_size_level0: float, tumour_circle: Sequence[float],
                    tissue_ellipse: Sequence[float] | None = None) -> np.ndarray:
    """Bool [T]: the tile's centre lies inside the planted tumour.

    ``coords_level0`` [T, 2] are the tiles' top-left (x, y) in level-0 px, ``tile_size_level0`` their side in
    level-0 px (both as in STORE/wsi/<patient>.h5: ``coords_level0`` and attribute ``tile_size_level0``);
    ``tumour_circle`` (cx, cy, r) and ``tissue_ellipse`` (cx, cy, rx, ry) in level-0 px as in truth.json
    ``slides[patient]``. The generator draws the tumour as the circle inside the tissue ellipse, so a given
    ellipse clips the circle.
    """
    coords = np.asarray(coords_level0, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise FusionDataError(f"tiles_in_tumour: coords_level0 must be [T, 2], got {coords.shape}")
    centre = coords + float(tile_size_level0) / 2.0
    tx, ty, r = map(float, tumour_circle)
    inside = (centre[:, 0] - tx) ** 2 + (centre[:, 1] - ty) ** 2 <= r**2
    if tissue_ellipse is not None:
        ex, ey, rx, ry = map(float, tissue_ellipse)
        inside &= ((centre[:, 0] - ex) / rx) ** 2 + ((centre[:, 1] - ey) / ry) ** 2 <= 1.0
    return inside


def attention_auc(attention: np.ndarray, inside: np.ndarray) -> float:
    """ROC AUC of attention weights [T] against the truth mask [T] (ties count 0.5); NaN when the slide's
    tiles are all inside or all outside the tumour."""
    attention, inside = np.asarray(attention, dtype=np.float64).reshape(-1), np.asarray(inside, bool).reshape(-1)
    if attention.shape != inside.shape:
        raise FusionDataError(f"attention_auc: {attention.size} attention weights but {inside.size} truth labels")
    return roc_auc(inside.astype(int), attention)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over the same instances (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise FusionDataError(f"rank_correlation: maps of {a.size} and {b.size} instances")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def reinitialised(model: FusionModel, seed: int) -> FusionModel:
    """A copy of ``model`` (same architecture, buffers and mode) whose layers are re-initialised at random:
    every submodule's ``reset_parameters`` runs under torch's RNG seeded with ``seed`` (the caller's RNG
    state is restored). The model-randomisation baseline of an explanation."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in twin.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not twin:
                reset()
    return twin


def deletion_draws(n: int, attention: np.ndarray, frac: float, n_random: int, seed: int) -> list[np.ndarray]:
    """The instance sets a deletion check removes from a bag of ``n``: first the top ``frac`` attended
    (``round(frac * n)``, at least one removed and one kept; ties in the bag's order), then ``n_random`` random
    sets of as many instances (``np.random.default_rng(seed)``)."""
    if not 0 < frac < 1:
        raise FusionDataError(f"deletion: frac must be in (0, 1), got {frac}")
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    if attention.size != n:
        raise FusionDataError(f"deletion: {attention.size} attention weights for a bag of {n} instances")
    if n < 2:
        raise FusionDataError(f"deletion: a bag of {n} instance(s) has nothing to remove and keep")
    k = int(min(max(1, round(frac * n)), n - 1))
    rng = np.random.default_rng(seed)
    return [np.argsort(-attention, kind="stable")[:k]] + [rng.choice(n, size=k, replace=False)
                                                          for _ in range(n_random)]


def _changes(pred: np.ndarray) -> tuple[float, float]:
    """(change of row 1, mean change of rows 2..) against row 0: sum over outputs of |difference|."""
    pred = np.asarray(pred, dtype=np.float64).reshape(pred.shape[0], -1)
    change = np.abs(pred[1:] - pred[:1]).sum(axis=1)
    return float(change[0]), float(change[1:].mean())


@torch.no_grad()
def deletion_changes(model: FusionModel, dataset: MultimodalDataset, index: int, attention: np.ndarray, *,
                     modality: str = "wsi", frac: float = 0.1, n_random: int = 10, seed: int = 0
                     ) -> tuple[float, float]:
    """(change when the top ``frac`` attended instances are removed, mean change over ``n_random`` removals
    of as many random instances) for patient ``index``'s bag of ``modality``.

    Removing an instance = masking it out of the bag (an attention-MIL gives masked instances exactly zero
    weight); at least one instance is removed and one kept (``deletion_draws``). Change = sum over outputs of
    |prediction with the full bag - prediction without the instances| (probabilities for diagnosis, risk for
    survival), every other modality of the patient unchanged. ``attention`` [T] in the bag's instance order
    (``bag_attention``).
    """
    model.eval()
    device = next(model.parameters()).device
    batch = dataset.to_batch([int(index)], model.modalities, device=device)
    mask = batch[modality]["mask"]
    if mask is None or not bool(batch[modality]["present"][0]):
        raise FusionDataError(f"deletion_changes: patient '{dataset.patients[index]}' has no '{modality}' bag")
    valid = mask[0].nonzero().squeeze(1)
    drops = deletion_draws(int(valid.numel()), attention, frac, n_random, seed)
    masks = mask.repeat(len(drops) + 1, 1)
    for j, drop in enumerate(drops, start=1):
        masks[j, valid[torch.as_tensor(drop, device=device)]] = False
    rows = torch.zeros(len(drops) + 1, dtype=torch.long, device=device)
    variants = {m: {key: (None if t is None else t.index_select(0, rows)) for key, t in parts.items()}
                for m, parts in batch.items()}
    variants[modality]["mask"] = masks
    pred = outputs_to_predictions(model.task, model(variants)).double().reshape(len(drops) + 1, -1)
    return _changes(pred.cpu().numpy())


def slide_model_deletion(model: SlideAttentionModel, bag: np.ndarray, attention: np.ndarray, *, frac: float = 0.1,
                         n_random: int = 10, seed: int = 0) -> tuple[float, float]:
    """``deletion_changes`` for a ``SlideAttentionModel`` and one slide's raw bag [T, d]: the class
    probabilities with every tile against those without the top-attended / random tiles (the bag is centred
    on the whole slide first, so removing tiles only takes them out of the attention pooling)."""
    n = int(np.asarray(bag).shape[0])
    drops = deletion_draws(n, attention, frac, n_random, seed)
    keep = np.ones((len(drops) + 1, n), bool)
    for j, drop in enumerate(drops, start=1):
        keep[j, drop] = False
    return _changes(model.probabilities(bag, keep))


def _rows(ids: Sequence, truth: Sequence[np.ndarray], attend: Callable[[Any, Any], np.ndarray],
          delete: Callable[[Any, Any, np.ndarray], tuple[float, float]], models: Sequence, names: Sequence[str]
          ) -> list[dict]:
    """One row per instance bag: the first of ``models`` is the trained one, the rest its baselines.
    ``attend(model, id)`` -> attention [T]; ``delete(model, id, attention)`` -> (top, random) changes."""
    rows = []
    model = models[0]
    for i, (name, inside) in enumerate(zip(names, truth)):
        att = attend(model, ids[i])
        inside = np.asarray(inside, bool)
        if inside.size != att.size:
            raise FusionDataError(f"slide faithfulness: patient '{name}': truth for {inside.size} tiles, bag of "
                                  f"{att.size}")
        top, rand = delete(model, ids[i], att)
        row = {"patient_id": name, "n_tiles": int(att.size), "n_tumour_tiles": int(inside.sum()),
               "attention_auc": attention_auc(att, inside), "deletion_top": top, "deletion_random": rand}
        if len(models) > 1:
            row.update({"random_model_auc": [], "rank_correlation": [], "random_model_deletion_top": [],
                        "random_model_deletion_random": []})
        for baseline in models[1:]:
            base = attend(baseline, ids[i])
            btop, brand = delete(baseline, ids[i], base)
            row["random_model_auc"].append(attention_auc(base, inside))
            row["rank_correlation"].append(rank_correlation(att, base))
            row["random_model_deletion_top"].append(btop)
            row["random_model_deletion_random"].append(brand)
        rows.append(row)
    return rows


def slide_faithfulness(model: FusionModel, dataset: MultimodalDataset, truth: Mapping[int, np.ndarray], *,
                       modality: str = "wsi", frac: float = 0.1, n_random: int = 10, seed: int = 0,
                       baselines: Sequence[FusionModel] = ()) -> list[dict]:
    """Per patient index of ``truth`` ({index: bool [T] 'instance inside the planted region'}): attention AUC
    and deletion changes (top-attended vs random instances); with ``baselines`` (e.g. ``reinitialised`` copies
    of the model), per baseline b its attention AUC (``random_model_auc`` list), Spearman correlation with the
    model's map (``rank_correlation`` list) and deletion changes. One dict per patient."""
    index = [int(i) for i in truth]
    return _rows(index, [truth[i] for i in index], lambda m, i: bag_attention(m, dataset, i, modality),
                 lambda m, i, att: deletion_changes(m, dataset, i, att, modality=modality, frac=frac,
                                                    n_random=n_random, seed=seed + i),
                 [model, *baselines], [dataset.patients[i] for i in index])


def slide_model_faithfulness(model: SlideAttentionModel, bags: Mapping[str, np.ndarray],
                             truth: Mapping[str, np.ndarray], *, frac: float = 0.1, n_random: int = 10, seed: int = 0,
                             baselines: Sequence[SlideAttentionModel] = ()) -> list[dict]:
    """``slide_faithfulness`` for a ``SlideAttentionModel`` over raw bags ({patient: [T, d]}) and the truth
    ({patient: bool [T]}, every patient of ``truth`` needs a bag); baselines e.g. ``model.reinitialised(s)``.
    The random tiles of patient number j (``truth``'s order) are drawn with seed ``seed + j``."""
    names = list(truth)
    missing = [p for p in names if p not in bags]
    if missing:
        raise FusionDataError(f"slide_model_faithfulness: no bag for patients {missing[:5]}")
    return _rows(list(range(len(names))), [truth[p] for p in names], lambda m, j: m.attention(bags[names[j]]),
                 lambda m, j, att: slide_model_deletion(m, bags[names[j]], att, frac=frac, n_random=n_random,
                                                        seed=seed + j),
                 [model, *baselines], names)


def summarise_slides(rows: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Cohort figures from ``slide_faithfulness`` rows: mean attention AUC over slides (NaN slides left out) and
    deletion ratio = mean top-attended change / mean random change; with baselines, per baseline the same two
    figures (``random_model_aucs``, ``random_model_deletion_ratios``), their means (``random_model_auc``,
    ``random_model_deletion_ratio``) and the mean Spearman correlation of the maps (``rank_correlation``, over
    slides and baselines)."""
    if not rows:
        raise FusionDataError("summarise_slides: no slide")

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], dtype=np.float64)  # [slides] or [slides, baselines]

    out: dict[str, object] = {"n_slides": len(rows), "attention_auc": float(np.nanmean(col("attention_auc"))),
                              "deletion_ratio": float(col("deletion_top").mean()
                                                      / max(col("deletion_random").mean(), 1e-12))}
    if rows[0].get("random_model_auc"):
        aucs = np.nanmean(col("random_model_auc"), axis=0)
        ratios = col("random_model_deletion_top").mean(axis=0) / np.maximum(
            col("random_model_deletion_random").mean(axis=0), 1e-12)
        out.update({"random_model_aucs": [float(a) for a in aucs], "random_model_auc": float(aucs.mean()),
                    "random_model_deletion_ratios": [float(r) for r in ratios],
                    "random_model_deletion_ratio": float(ratios.mean()),
                    "rank_correlation": float(np.nanmean(col("rank_correlation")))})
    return out


def planted_evidence(signals: Mapping[str, float], label: int, n_classes: int, shift: float) -> dict[str, float]:
    """Per modality, the planted evidence for the patient's true class: the log-likelihood ratio of class
    ``label`` against its nearest rival under the generator's model s_m ~ N((2y - (K - 1)) * shift, 1)
    (flows/synthetic/cohort.py plan_cohort): min over k != y of (mu_y - mu_k) (s_m - (mu_y + mu_k) / 2).
    Positive: the modality's signal favours the true class."""
    if not 0 <= label < n_classes or n_classes < 2:
        raise FusionDataError(f"planted_evidence: label {label} outside {n_classes} classes")
    mu = (2 * np.arange(n_classes) - (n_classes - 1)) * float(shift)
    out = {}
    for m, s in signals.items():
        llr = [(mu[label] - mu[k]) * (float(s) - (mu[label] + mu[k]) / 2) for k in range(n_classes) if k != label]
        out[m] = float(min(llr))
    return out


def dominant_modality(evidence: Mapping[str, float], margin: float) -> str | None:
    """The modality whose evidence exceeds every other's by at least ``margin`` (and is positive), else None."""
    if len(evidence) < 2:
        return None
    ranked = sorted(evidence.items(), key=lambda kv: kv[1], reverse=True)
    (top, e1), (_, e2) = ranked[0], ranked[1]
    return top if e1 > 0 and e1 - e2 >= margin else None
