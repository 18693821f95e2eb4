"""The ranking's model evidence (flows.stages.fusion_experiments.model_evidence) reads only the expression it
attributes: imaging and slide inputs, damaged, missing or re-encoded, never move a gene's evidence (issue
18: the ranking of a cohort whose expression inputs were not touched is identical), and the genes that
separate the diagnoses carry the most attribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.stages.fusion_experiments import model_evidence
from fusion.train import seeded

CFG = {"fusion_epochs": 30, "fusion_lr": 3e-3, "fusion_weight_decay": 1e-2, "fusion_batch_size": None,
       "modality_dropout": 0.2, "seed": 0, "torch_cpu_threads": 1, "fusion_bag_instances": 32, "embed_dim": 8,
       "fusion_hidden": 16, "fusion_dropout": 0.3}
PLANTED = ["G03", "G11", "G17"]


@pytest.fixture(scope="module")
def cohort():
    """40 patients x 24 genes; the planted genes are 2.5 SD higher in tumour 'B'; CT rows and slide bags
    of noise for 30 of them."""
    rng = np.random.default_rng(3)
    pids = [f"P{i:02d}" for i in range(40)]
    genes = [f"G{j:02d}" for j in range(24)]
    labels = pd.Series(np.where(np.arange(40) % 2 == 0, "A", "B"), index=pids, name="primary_diagnosis")
    x = rng.normal(size=(40, 24))
    x[:, [genes.index(g) for g in PLANTED]] += 2.5 * (labels.to_numpy() == "B")[:, None]
    expression = pd.DataFrame(x, index=pids, columns=genes)
    ct = pd.DataFrame(rng.normal(size=(30, 5)), index=pids[:30]).add_prefix("ct_")
    bags = {p: rng.normal(size=(int(rng.integers(4, 12)), 6)).astype(np.float32) for p in pids[:30]}
    return {"expression": expression, "ct": ct, "bags": bags, "labels": labels}


def _evidence(frames, bags, labels) -> pd.Series:
    with seeded(CFG["seed"]):  # as flows.tasks.fusion_task calls it
        return model_evidence(frames, bags, labels, CFG)


def test_imaging_and_slides_do_not_move_the_model_evidence(cohort):
    e, labels = cohort["expression"], cohort["labels"]
    full = _evidence({"expression": e, "ct": cohort["ct"]}, cohort["bags"], labels)
    # a damaged cohort: a third of the CTs and half of the slides lost, the rest re-encoded differently
    ct = cohort["ct"].iloc[10:] * 3.0 + 1.0
    bags = {p: b[::-1] * 2.0 for p, b in list(cohort["bags"].items())[::2]}
    damaged = _evidence({"expression": e, "ct": ct, "pet": ct.add_prefix("pet_")}, bags, labels)
    alone = _evidence({"expression": e}, {}, labels)
    assert list(full.index) == list(e.columns)
    pd.testing.assert_series_equal(full, damaged, check_exact=True)
    pd.testing.assert_series_equal(full, alone, check_exact=True)
    # the evidence does move with the expression it attributes
    shifted = _evidence({"expression": e.assign(G05=e["G05"] + 2.5 * (labels == "B"))}, {}, labels)
    assert shifted.rank(ascending=False)["G05"] <= 4 < full.rank(ascending=False)["G05"]


def test_the_genes_that_separate_the_diagnoses_lead(cohort):
    ev = _evidence({"expression": cohort["expression"]}, {}, cohort["labels"])
    assert (ev >= 0).all() and ev.notna().all()
    assert set(ev.sort_values(ascending=False).index[:3]) == set(PLANTED), ev.sort_values(ascending=False).head(6)


def test_patients_without_expression_or_a_single_class_give_what_the_data_allow(cohort):
    e, labels = cohort["expression"], cohort["labels"]
    # labelled patients without expression are left out, not an error; the others give the same evidence
    extra = pd.concat([labels, pd.Series(["A", "B"], index=["X1", "X2"])])
    pd.testing.assert_series_equal(_evidence({"expression": e}, {}, extra), _evidence({"expression": e}, {}, labels),
                                   check_exact=True)
    assert _evidence({"ct": cohort["ct"]}, cohort["bags"], labels).empty  # no expression: no model evidence
    one_class = labels[labels == "A"]
    assert _evidence({"expression": e}, {}, one_class).empty  # nothing to discriminate
