"""Model card of an activity model: what it was trained on, how it was split and how well it did.

``activity_model_card`` records the training data (rows, targets, compounds, activity types and a
SHA-256 of the pairs), the calibration split of its conformal intervals, and held-out figures on
the same data: for each split (random, cold-drug) a model of the same configuration is trained on
80 % of the pairs and scored on the rest, with the additive drug-mean + target-mean baseline on the
same split, the interval's measured coverage and the applicability-domain threshold.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from molecules.activity import ActivityConfig, ActivityModel, predict_table
from molecules.conformal import conformal_halfwidth, coverage, intervals
from molecules.domain import DOMAIN_TANIMOTO
from molecules.dti_data import DTITable, split_mask
from molecules.dti_metrics import dti_metrics

__all__ = ["additive_baseline", "table_sha256", "held_out_figures", "activity_model_card"]


def additive_baseline(train: DTITable, test: DTITable) -> np.ndarray:
    """Predictions mean + target offset + drug offset (offsets fitted in that order; unseen ones are 0)."""
    mu = float(train.value.mean())
    n_t, n_d = len(train.targets), len(train.smiles)
    t_sum = np.bincount(train.target_idx, train.value - mu, n_t)
    t_off = np.divide(t_sum, np.bincount(train.target_idx, minlength=n_t), out=np.zeros(n_t),
                      where=np.bincount(train.target_idx, minlength=n_t) > 0)
    rest = train.value - mu - t_off[train.target_idx]
    d_cnt = np.bincount(train.drug_idx, minlength=n_d)
    d_off = np.divide(np.bincount(train.drug_idx, rest, n_d), d_cnt, out=np.zeros(n_d), where=d_cnt > 0)
    return mu + t_off[test.target_idx] + d_off[test.drug_idx]


def table_sha256(table: DTITable) -> str:
    """SHA-256 of the training pairs as sorted 'smiles<TAB>target<TAB>value' lines (order-independent)."""
    lines = sorted(f"{table.smiles[d]}\t{table.targets[t]}\t{v:.6g}"
                   for d, t, v in zip(table.drug_idx, table.target_idx, table.value))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def held_out_figures(table: DTITable, fit, splits: Sequence[str] = ("random", "cold-drug"), seed: int = 0,
                     nominal: float = 0.9, test_fraction: float = 0.2) -> dict[str, dict]:
    """Per split: the model's CI / MSE / Pearson, interval coverage at ``nominal`` and the additive baseline.

    ``fit(train_table) -> ActivityModel`` with ``calibration`` set (e.g. ``fit_calibrated``). Splits that
    leave no train or no test pair (one drug only) are recorded with the reason instead of figures.
    """
    out: dict[str, dict] = {}
    for split in splits:
        test = split_mask(table, split, test_fraction, seed)
        if test.all() or not test.any() or (~test).sum() < 4:
            out[split] = {"skipped": f"{int((~test).sum())} train / {int(test.sum())} test pairs"}
            continue
        train_t, test_t = table.subset(~test), table.subset(test)
        t0 = time.perf_counter()
        model = fit(train_t)
        pred = predict_table(model, test_t)
        lo, hi = intervals(pred, model.calibration, nominal)
        base = additive_baseline(train_t, test_t)
        out[split] = {"n_train": int((~test).sum()), "n_test": int(test.sum()), "seed": seed,
                      "model": _finite(dti_metrics(test_t.value, pred)),
                      "baseline_drug_target_mean": _finite(dti_metrics(test_t.value, base)),
                      "coverage": coverage(test_t.value, lo, hi), "nominal": nominal,
                      "train_s": round(time.perf_counter() - t0, 2)}
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in metrics.items()}


def activity_model_card(model: ActivityModel, table: DTITable, calibration_n: int, figures: dict[str, dict],
                        nominal: float = 0.9, description: str = "") -> dict:
    """JSON-ready card of a fitted, calibrated model trained on ``table`` (all pairs incl. calibration)."""
    types, counts = np.unique(np.array([t.rsplit("|", 1)[-1] for t in table.targets])[table.target_idx],
                              return_counts=True)
    genes = {t.rsplit("|", 1)[0] for t in table.targets}
    config: ActivityConfig = model.config
    return {
        "model_version": model.version, "description": description,
        "architecture": f"molecule GNN (GINE, {config.layers} layers) x target encoder {list(config.target_parts)}",
        "config": config.to_dict(), "activity_types": list(model.activity_types),
        "training_data": {"rows": len(table), "targets": len(genes), "tasks": len(table.targets),
                          "compounds": int(len(np.unique(table.drug_idx))), "sha256": table_sha256(table),
                          "rows_per_activity_type": {str(k): int(v) for k, v in zip(types, counts)},
                          "source": table.source},
        "splits": {"calibration": {"kind": "random", "n": int(calibration_n), "of": len(table)},
                   **{k: {"kind": k, "test_fraction": 0.2, "seed": v.get("seed")} for k, v in figures.items()}},
        "metrics": figures,
        "interval": {"method": "split conformal, absolute residuals", "nominal": nominal,
                     "halfwidth": _finite({"q": conformal_halfwidth(model.calibration, nominal)})["q"]},
        "domain": {"measure": "Tanimoto, Morgan radius 2, 2048 bits, to the nearest training compound "
                              "measured on the target", "in_domain_at_least": DOMAIN_TANIMOTO},
    }
