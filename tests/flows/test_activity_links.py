"""Predicted compound links: an activity model trained on a library's measured activities transfers a
target family's chemistry to a family member measured only on inactive compounds; measured pairs and
targets that already have a potent measured compound get no prediction."""

from __future__ import annotations

import pandas as pd

from flows.stages.activity_links import predicted_links, targets_needing_predictions
from molecules.io import standardise_smiles

ACIDS = ["OC(=O)c1ccccc1", "OC(=O)c1ccc(C)cc1", "OC(=O)c1ccc(Cl)cc1", "OC(=O)c1ccc(O)cc1", "OC(=O)CCc1ccccc1",
         "OC(=O)c1cccc(F)c1", "OC(=O)c1ccncc1", "OC(=O)Cc1ccccc1"]
AMINES = ["NCCc1ccccc1", "CN(C)CCc1ccccc1", "NCc1ccc(Cl)cc1", "NCCCc1ccccc1", "c1ccc(cc1)C1CCNCC1", "NCc1ccccc1",
          "CNCCc1ccccc1", "NCCc1ccc(F)cc1"]
NEUTRAL = ["Cc1ccccc1", "Clc1ccccc1", "COc1ccccc1", "Cc1ccc(C)cc1", "CCOc1ccccc1", "Fc1ccccc1", "CCc1ccccc1",
           "c1ccc2ccccc2c1"]


def _library():
    kind = ["acid"] * 8 + ["amine"] * 8 + ["neutral"] * 8
    comp = pd.DataFrame({"compound_id": [f"C{i:02d}" for i in range(24)],
                         "canonical_smiles": [standardise_smiles(s) for s in ACIDS + AMINES + NEUTRAL]})
    rows = [(t, cid, 8.0 if k == family else 4.5)
            for t, family in [("A1", "acid"), ("A2", "acid"), ("A3", "acid"), ("B1", "amine"), ("B2", "amine"),
                              ("B3", "amine")]
            for cid, k in zip(comp["compound_id"], kind)]
    rows += [("A4", cid, 4.5) for cid, k in zip(comp["compound_id"], kind) if k != "acid"]  # acids never tested
    return comp, pd.DataFrame(rows, columns=["target_gene", "compound_id", "pchembl"]), dict(zip(comp["compound_id"], kind))


def test_family_member_without_potent_measurements_gets_the_familys_chemistry_predicted():
    comp, links, kind = _library()
    need = targets_needing_predictions(links, ["A4", "B1", "A1", "NOVEL"], top_n=4, active=6.0)
    assert need == ["A4"]  # B1 and A1 have potent measured compounds; NOVEL has no measurements at all
    pred = predicted_links(comp, links, need, active=6.0, per_target=8, steps=300, seed=0)
    assert len(pred) >= 6 and set(pred["target_gene"]) == {"A4"}
    assert {kind[c] for c in pred["compound_id"]} == {"acid"}  # only the untested acids, never a measured pair
    assert (pred["pchembl"] >= 6.0).all() and (pred["link_type"] == "predicted").all()
    version = pred["model_version"].iloc[0]
    assert len(version) == 12 and (pred["model_version"] == version).all()
    assert pred["source"].str.endswith(version).all()
