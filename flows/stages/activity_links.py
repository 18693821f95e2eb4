"""Stage: predicted compound links for ranked targets that lack a measured potent compound.

An activity model (molecule GNN x learned target embedding, molecules.activity) is trained on the
library's own measured activities; it scores every library compound against the top-ranked targets
whose best measured pChEMBL is below the active threshold, and the best predictions at or above the
threshold become links flagged ``predicted`` with the model's version (never mixed with measured ones).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LINK_COLUMNS = ["target_gene", "compound_id", "pchembl", "activity_type", "source", "link_type", "model_version"]


def targets_needing_predictions(links: pd.DataFrame, ranked_genes: list[str], top_n: int, active: float) -> list[str]:
    """Of the top_n ranked genes, those with measured activities (so the model knows them) but no
    measured compound at or above `active`."""
    if links.empty:
        return []
    best = links.groupby("target_gene")["pchembl"].max()
    return [g for g in ranked_genes[:top_n] if g in best.index and best[g] < active]


def predicted_links(compounds: pd.DataFrame, links: pd.DataFrame, genes: list[str], active: float,
                    per_target: int = 5, steps: int = 400, seed: int = 0, batch_size: int = 256) -> pd.DataFrame:
    """Links predicted for `genes` (LINK_COLUMNS; empty when nothing reaches `active`).

    `compounds`: compound_id, canonical_smiles; `links`: measured target_gene, compound_id, pchembl.
    The model trains for about `steps` optimiser steps whatever the library's size. Measured pairs are
    never re-predicted."""
    from molecules.activity import ActivityConfig, fit_activity, predict_pairs
    from molecules.activity_io import model_version
    from molecules.dti_data import DTITable

    if not genes or links.empty:
        return pd.DataFrame(columns=LINK_COLUMNS)
    smiles_of = dict(zip(compounds["compound_id"], compounds["canonical_smiles"]))
    measured = links.loc[links["compound_id"].isin(smiles_of.keys())]
    drugs = sorted(set(measured["compound_id"]))
    targets = sorted(set(measured["target_gene"]))
    d_index, t_index = {c: i for i, c in enumerate(drugs)}, {g: i for i, g in enumerate(targets)}
    table = DTITable(smiles=[smiles_of[c] for c in drugs], targets=targets, sequences=None,
                     drug_idx=measured["compound_id"].map(d_index).to_numpy(np.int64),
                     target_idx=measured["target_gene"].map(t_index).to_numpy(np.int64),
                     value=measured["pchembl"].to_numpy(np.float64), source="compound library activities")
    epochs = max(1, -(-steps // max(1, -(-len(table) // batch_size))))
    config = ActivityConfig(epochs=epochs, seed=seed, target_parts=("embedding",), batch_size=batch_size, amp=False)
    model = fit_activity(table, config, device="cpu")
    version = model_version(model)
    library = list(smiles_of)
    known = set(zip(measured["target_gene"], measured["compound_id"]))
    pairs = [(g, c) for g in genes for c in library if (g, c) not in known]
    if not pairs:
        return pd.DataFrame(columns=LINK_COLUMNS)
    pred = predict_pairs(model, [smiles_of[c] for c in library], targets,
                         np.array([library.index(c) for _, c in pairs]), np.array([t_index[g] for g, _ in pairs]))
    out = pd.DataFrame({"target_gene": [g for g, _ in pairs], "compound_id": [c for _, c in pairs], "pchembl": pred})
    out = (out.loc[out["pchembl"] >= active].sort_values(["target_gene", "pchembl"], ascending=[True, False])
           .groupby("target_gene").head(per_target))
    return out.assign(activity_type="predicted pChEMBL", source=f"activity model {version}", link_type="predicted",
                      model_version=version)[LINK_COLUMNS].reset_index(drop=True)
