"""Stage: predicted compound links for ranked targets that lack a measured potent compound.

An activity model (molecule GNN x learned target embedding, molecules.activity) is trained on the
library's own measured activities, one task per (target, activity type) so Kd, Ki and IC50 values are
never pooled; 10 % of the pairs are held out to calibrate split-conformal intervals. It scores every
library compound against the top-ranked targets whose best measured pChEMBL is below the active
threshold; the best predictions at or above the threshold become links flagged ``predicted`` with
the model's version, the activity type they predict, a 90 % interval and the applicability domain
(Tanimoto to the nearest training compound measured on the target / on any target). The model card
(training data, splits, held-out figures with a baseline) travels in ``links.attrs['model_card']``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LINK_COLUMNS = ["target_gene", "compound_id", "pchembl", "activity_type", "source", "link_type", "model_version",
                "pchembl_lower", "pchembl_upper", "interval_nominal", "nn_tanimoto_target", "nn_tanimoto_any",
                "in_domain"]
UNTYPED = "pChEMBL"  # activity type of library rows that do not say which measurement they are
NOMINAL = 0.9


def targets_needing_predictions(links: pd.DataFrame, ranked_genes: list[str], top_n: int, active: float) -> list[str]:
    """Of the top_n ranked genes, those with measured activities (so the model knows them) but no
    measured compound at or above `active`."""
    if links.empty:
        return []
    best = links.groupby("target_gene")["pchembl"].max()
    return [g for g in ranked_genes[:top_n] if g in best.index and best[g] < active]


def activity_task_table(compounds: pd.DataFrame, links: pd.DataFrame):
    """The library's measured links as a DTITable whose targets are 'gene|activity type' tasks."""
    from molecules.dti_data import DTITable

    smiles_of = dict(zip(compounds["compound_id"], compounds["canonical_smiles"]))
    measured = links.loc[links["compound_id"].isin(smiles_of.keys())]
    kinds = (measured["activity_type"].fillna(UNTYPED).astype(str).str.strip().replace("", UNTYPED)
             if "activity_type" in measured.columns else pd.Series(UNTYPED, index=measured.index))
    task = measured["target_gene"].astype(str) + "|" + kinds
    drugs, tasks = sorted(set(measured["compound_id"])), sorted(set(task))
    d_index, t_index = {c: i for i, c in enumerate(drugs)}, {g: i for i, g in enumerate(tasks)}
    return DTITable(smiles=[smiles_of[c] for c in drugs], targets=tasks, sequences=None,
                    drug_idx=measured["compound_id"].map(d_index).to_numpy(np.int64),
                    target_idx=task.map(t_index).to_numpy(np.int64),
                    value=measured["pchembl"].to_numpy(np.float64), source="compound library activities",
                    activity_types=tuple(sorted(set(kinds))))


def predicted_links(compounds: pd.DataFrame, links: pd.DataFrame, genes: list[str], active: float,
                    per_target: int = 5, steps: int = 400, seed: int = 0, batch_size: int = 256,
                    evaluate: bool = True) -> pd.DataFrame:
    """Links predicted for `genes` (LINK_COLUMNS; empty when nothing reaches `active`).

    `compounds`: compound_id, canonical_smiles; `links`: measured target_gene, compound_id, pchembl
    [, activity_type]. The model trains for about `steps` optimiser steps whatever the library's size.
    Measured pairs are never re-predicted. With `evaluate`, the card carries held-out figures
    (random and cold-drug splits, same settings) next to the additive drug + target mean baseline."""
    from molecules.activity import ActivityConfig
    from molecules.activity_io import CALIBRATION_FRACTION, fit_calibrated, model_version
    from molecules.model_card import activity_model_card, held_out_figures

    if not genes or links.empty:
        return pd.DataFrame(columns=LINK_COLUMNS)
    table = activity_task_table(compounds, links)
    epochs = max(1, -(-steps // max(1, -(-len(table) // batch_size))))
    config = ActivityConfig(epochs=epochs, seed=seed, target_parts=("embedding",), batch_size=batch_size, amp=False)
    fit = (lambda t: fit_calibrated(t, config, "cpu", CALIBRATION_FRACTION, seed))
    model = fit(table)
    model.version = model_version(model)
    figures = held_out_figures(table, fit, seed=seed, nominal=NOMINAL) if evaluate else {}
    card = activity_model_card(model, table, len(model.calibration), figures, NOMINAL,
                               "in-run model on the library's measured activities (flows/stages/activity_links)")
    out = _score(model, table, compounds, links, genes, active, per_target)
    out.attrs["model_card"] = card
    return out


def _score(model, table, compounds: pd.DataFrame, links: pd.DataFrame, genes: list[str], active: float,
           per_target: int) -> pd.DataFrame:
    """Every unmeasured (gene task, library compound) pair scored; the best per_target at >= active per gene."""
    from molecules.activity import predict_pairs
    from molecules.activity_io import CALIBRATION_FRACTION
    from molecules.conformal import calibration_mask, intervals
    from molecules.domain import nearest_training_similarity

    smiles_of = dict(zip(compounds["compound_id"], compounds["canonical_smiles"]))
    library = list(smiles_of)
    lib_index = {c: i for i, c in enumerate(library)}
    known = set(zip(links["target_gene"], links["compound_id"]))
    tasks = [(i, t.rsplit("|", 1)) for i, t in enumerate(table.targets)]
    pairs = [(g, kind, ti, c) for g0 in genes for ti, (g, kind) in tasks if g == g0
             for c in library if (g, c) not in known]
    if not pairs:
        return pd.DataFrame(columns=LINK_COLUMNS)
    pred = predict_pairs(model, [smiles_of[c] for c in library], table.targets,
                         np.array([lib_index[c] for *_, c in pairs]), np.array([p[2] for p in pairs]))
    out = pd.DataFrame({"target_gene": [p[0] for p in pairs], "activity_type": [p[1] for p in pairs],
                        "compound_id": [p[3] for p in pairs], "pchembl": pred})
    out = (out.loc[out["pchembl"] >= active].sort_values(["target_gene", "pchembl"], ascending=[True, False])
           .groupby("target_gene").head(per_target).reset_index(drop=True))
    lo, hi = intervals(out["pchembl"].to_numpy(), model.calibration, NOMINAL)
    train = table.subset(~calibration_mask(len(table), CALIBRATION_FRACTION, model.config.seed))
    domain = nearest_training_similarity(
        [smiles_of[c] for c in out["compound_id"]], list(out["target_gene"]),
        [train.smiles[i] for i in train.drug_idx], [table.targets[i].rsplit("|", 1)[0] for i in train.target_idx])
    finite = np.isfinite(hi)
    return out.assign(source=f"activity model {model.version}", link_type="predicted",
                      model_version=model.version, pchembl_lower=np.where(finite, lo, np.nan),
                      pchembl_upper=np.where(finite, hi, np.nan), interval_nominal=NOMINAL,
                      **{c: domain[c].to_numpy() for c in domain.columns})[LINK_COLUMNS]
