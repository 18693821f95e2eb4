"""The interaction cohort (`fusionrx demo-data --signal interaction`): part of the diagnosis planted as expression
subtype XOR PET phenotype, which neither modality alone nor any model additive over modalities can read.

Through the pipeline (DICOM CT/PET + GDC expression -> Prefect run -> the run's diagnosis experiment), the best
interaction-aware fusion (in practice 'bilinear': pairwise bilinear terms on a few PCs per modality, its width and
weight decay chosen by inner CV) beats every single modality and the logistic baseline on all features, by more
than one standard error of the paired per-fold gain.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from flows.synthetic.cohort import CohortConfig, generate_cohort, plan_cohort

pytestmark = pytest.mark.slow  # a pipeline run over a 64-patient cohort

INTERACTION_AWARE = ("early", "attention", "kronecker", "bilinear")


def test_interaction_plan_hides_the_diagnosis_from_each_modality_alone():
    config = CohortConfig(n_patients=80, seed=4, n_diagnoses=2, signal="interaction")
    plan = plan_cohort(config)
    linear = plan_cohort(replace(config, signal="linear"))
    y = plan["y"]
    subtype, pet_high = plan["interaction"]["expression_subtype"], plan["interaction"]["pet_high"]
    # the rest of the truth is the linear cohort's: same diagnoses, targets, CT signal
    assert (y == linear["y"]).all() and plan["targets"] == linear["targets"]
    assert np.array_equal(plan["signals"]["ct"], linear["signals"]["ct"])
    assert ((subtype ^ pet_high) == y).all()
    assert subtype.sum() * 2 == len(y)  # half the patients in each expression subtype
    # subtype and phenotype alone say (next to) nothing of the diagnosis: |correlation| within sampling noise
    for v in (subtype, pet_high):
        assert abs(np.corrcoef(v, y)[0, 1]) < 3 / np.sqrt(len(y))
    # the PET and expression signals carry the phenotype and the subtype (2 * interaction_shift apart)
    s_pet, s_expr = plan["signals"]["pet"], plan["signals"]["expression"]
    assert s_pet[pet_high == 1].mean() - s_pet[pet_high == 0].mean() > 2.5
    assert s_expr[subtype == 1].mean() - s_expr[subtype == 0].mean() > 2.5


def test_interaction_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_diagnoses"):
        plan_cohort(CohortConfig(n_patients=8, signal="interaction"))  # three diagnoses by default
    with pytest.raises(ValueError, match="CohortConfig.signal"):
        plan_cohort(CohortConfig(n_patients=8, signal="quadratic"))


# The cohort of the pipeline tests: CT + PET DICOM and GDC expression only (no slides, no spatial), every
# patient with PET; CT keeps a weak linear part of the diagnosis (signal_shift), the rest is the interaction.
N_PATIENTS, SEED = 64, 1
RUN_CONFIG = """\
cv_splits: 4
cv_repeats: 2
strategies: [early, late, attention, kronecker, bilinear, experts]
single_modalities: [ct, pet, expression]
survival_experiments: false
min_patients: 8
fusion_workers: 1
activity_steps: 0
fusion_mlflow: false
"""


@pytest.fixture(scope="module")
def interaction_run(tmp_path_factory, prefect_harness) -> dict:
    """The interaction cohort through the whole Prefect pipeline (its run-diagnosis experiment included)."""
    from flows.pipeline import run_pipeline
    from flows.results.db import query_experiment_results

    root = tmp_path_factory.mktemp("interaction")
    data, store = root / "data", root / "store"
    truth = generate_cohort(data, CohortConfig(n_patients=N_PATIENTS, seed=SEED, n_diagnoses=2, signal="interaction",
                                               signal_shift=0.3, frac_pet=1.0, frac_slide=0.0, frac_spatial=0.0),
                            progress=lambda m: None)
    (root / "run.yaml").write_text(RUN_CONFIG)
    run_pipeline(data / "data_catalog.yaml", store, config_path=root / "run.yaml", verbosity="quiet")
    rows = {r["model"]: r for r in query_experiment_results(store)}
    return {"truth": truth, "store": store, "rows": rows}


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def test_the_pipeline_extracts_the_planted_interaction(interaction_run):
    """SUVmax (PET phenotype) and the subtype genes (expression subtype) in the store's embeddings each say
    nothing of the diagnosis alone; their product recovers it: the interaction is learnable from them."""
    import pandas as pd

    truth, store = interaction_run["truth"], interaction_run["store"]
    inter = truth["interaction"]
    assert set(inter["rule"].split("'")[1::2]) == set(truth["diagnoses"])
    pet = pd.read_parquet(store / "embeddings" / "pet.parquet")
    expr = pd.read_parquet(store / "embeddings" / "expression.parquet")
    pids = sorted(set(pet.index) & set(expr.index))
    assert len(pids) == N_PATIENTS
    y = np.array([truth["subtype"][p] == truth["diagnoses"][1] for p in pids], dtype=int)
    suv = pet.loc[pids, "suv_max"].to_numpy()
    genes = [g for g in inter["expression_genes"] if g in expr.columns]
    assert len(genes) >= 10, "the subtype genes should be among the highly variable genes"
    subtype_score = expr.loc[pids, genes].mean(axis=1).to_numpy()
    assert _auc(np.array([inter["pet_high"][p] for p in pids]), suv) > 0.95
    assert _auc(np.array([inter["expression_subtype"][p] for p in pids]), subtype_score) > 0.9
    # alone: near chance; their centred product (the XOR): the diagnosis
    assert abs(_auc(y, suv) - 0.5) < 0.2 and abs(_auc(y, subtype_score) - 0.5) < 0.2
    product = (suv - np.median(suv)) * (subtype_score - np.median(subtype_score))
    assert max(_auc(y, product), _auc(y, -product)) > 0.85


def test_interaction_aware_fusion_beats_every_single_modality_and_the_linear_baseline(interaction_run):
    from fusion.experiment import paired_gain

    rows = interaction_run["rows"]
    singles = [r for r in rows.values() if r["strategy"] == "single"]
    assert sorted(r["model"] for r in singles) == ["single:ct", "single:expression", "single:pet"]
    baseline = rows["baseline:logistic"]
    best = max((rows[f"fusion:{s}"] for s in INTERACTION_AWARE), key=lambda r: r["mean"])
    for other in (baseline, *singles):
        gain, se = paired_gain(best["folds"], other["folds"])
        assert best["mean"] > other["mean"] and gain > se, (best["model"], other["model"], gain, se)


def test_demo_data_signal_option():
    from flows.cli import build_parser

    args = build_parser().parse_args(["demo-data", "--out", "x", "--signal", "interaction"])
    assert args.signal == "interaction"
    assert build_parser().parse_args(["demo-data", "--out", "x"]).signal == "linear"
