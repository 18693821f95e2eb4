"""Faithfulness of the explanations, measured against the planted truth of the generated cohort (the e2e_run
store: STORE/wsi/<patient>.h5 tiles, STORE/embeddings/*.parquet, and the cohort's truth.json), fixed seeds.
The measuring code is bench/explain_faithfulness.py's (the bench runs it over more cohorts)."""

import numpy as np
import pytest

from bench.explain_faithfulness import (controlled_hits, fused_dataset, load_slides, modality_hits, slide_dataset,
                                        slide_figures, train)
from fusion.errors import FusionDataError
from fusion.explain import fusion_model_shapley
from fusion.faithfulness import (attention_auc, deletion_changes, dominant_modality, planted_evidence,
                                 rank_correlation, tiles_in_tumour)


def test_tiles_in_tumour_uses_tile_centres_in_level0_px():
    # 128 px tiles (64 px read at level 1 of a 0.5 um/px slide); tumour circle at (300, 300), r = 100
    coords = np.array([[200, 200], [300, 300], [100, 100], [380, 250], [0, 0]])
    inside = tiles_in_tumour(coords, 128, (300, 300, 100))
    # centres (264, 264) d=51; (364, 364) d=90.5; (164, 164) d=192; (444, 314) d=144.7; (64, 64) d=333
    assert inside.tolist() == [True, True, False, False, False]
    # the tissue ellipse clips the circle as the generator draws it
    assert tiles_in_tumour(coords, 128, (300, 300, 100), (250, 250, 60, 60)).tolist() == [True] + [False] * 4
    with pytest.raises(FusionDataError, match=r"\[T, 2\]"):
        tiles_in_tumour(np.zeros(4), 128, (0, 0, 1))


def test_attention_auc_rank_correlation_and_planted_evidence_by_hand():
    inside = np.array([1, 1, 0, 0, 0], bool)
    assert attention_auc([0.4, 0.3, 0.1, 0.1, 0.1], inside) == 1.0
    assert attention_auc([0.1, 0.3, 0.2, 0.3, 0.1], inside) == pytest.approx((0 + 0 + 0.5 + 1.0 + 0.5 + 1.0) / 6)
    assert np.isnan(attention_auc([0.5, 0.5], np.array([True, True])))
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # K = 3, shift 0.7: class means -1.4, 0, 1.4; a class-2 patient with s = 2.0 (ct), 0.5 (pet), -1.0 (wsi):
    # evidence = min(vs class 1: 1.4 * (s - 0.7), vs class 0: 2.8 * s)
    ev = planted_evidence({"ct": 2.0, "pet": 0.5, "wsi": -1.0}, 2, 3, 0.7)
    assert ev == pytest.approx({"ct": 1.82, "pet": -0.28, "wsi": -2.8})
    assert dominant_modality(ev, margin=2.0) == "ct"
    assert dominant_modality(ev, margin=2.2) is None
    # class 1 (middle): min(vs class 0: 1.4 * (s + 0.7), vs class 2: -1.4 * (s - 0.7))
    assert planted_evidence({"a": 0.0, "b": 1.0}, 1, 3, 0.7) == pytest.approx({"a": 0.98, "b": -0.42})


@pytest.fixture(scope="module")
def cohort_slides(e2e_run):
    slides = load_slides(e2e_run["store"], e2e_run["truth"])
    # every slide with features (the broken one has none); ~17% of the tiles lie in the planted tumour
    assert len(slides) >= 0.8 * len(e2e_run["truth"]["slides"]) - 1
    frac = np.mean([s["inside"].mean() for s in slides.values()])
    assert 0.05 < frac < 0.4
    return slides


def test_slide_mil_attention_is_faithful_to_the_planted_tumour(e2e_run, cohort_slides, one_torch_thread):
    truth = e2e_run["truth"]
    ds = slide_dataset(cohort_slides, truth)
    mil = train(ds, ["wsi"], "single", seed=0, epochs=60)
    f = slide_figures(mil, ds, cohort_slides, seed=0, n_random_models=5)
    print("slide-only MIL:", f)
    assert f["n_slides"] == len(cohort_slides)
    assert f["attention_auc"] >= 0.8  # the target, averaged over slides
    assert f["deletion_ratio"] >= 2.0  # top-10% attended tiles vs as many random ones
    # model randomisation: the random networks' maps are unrelated to the trained one's
    assert abs(f["rank_correlation"]) < 0.3
    # a random MIL's attention follows (or avoids) the unusual tiles, with a sign set by its seed: over the
    # re-initialisations its AUC sits nearer chance than the trained network's
    assert abs(f["random_model_auc"] - 0.5) < abs(f["attention_auc"] - 0.5)


def test_deletion_masks_out_the_top_attended_tiles(e2e_run, cohort_slides, one_torch_thread):
    import torch

    from fusion.heads import outputs_to_predictions

    ds = slide_dataset(cohort_slides, e2e_run["truth"])
    mil = train(ds, ["wsi"], "single", seed=0, epochs=5)
    bag = ds.modalities["wsi"].values[0]
    n = bag.shape[0]
    att = np.linspace(0.0, 1.0, n)  # the last tiles are the 'top attended'
    k = round(0.1 * n)
    keep = torch.ones(1, n, dtype=torch.bool)
    keep[0, n - k:] = False
    with torch.no_grad():
        full = outputs_to_predictions("multiclass", mil(ds.to_batch([0])))
        cut = outputs_to_predictions("multiclass", mil({"wsi": {"values": bag[None], "mask": keep,
                                                                  "present": torch.tensor([True])}}))
    top, rand = deletion_changes(mil, ds, 0, att, frac=0.1, n_random=3, seed=0)
    assert top == pytest.approx(float((full - cut).abs().sum()), abs=1e-6) and top > 0 and rand > 0
    with pytest.raises(FusionDataError, match="attention weights for a bag"):
        deletion_changes(mil, ds, 0, att[:-1])


def test_fused_shapley_adds_up_and_controlled_shares_hit(e2e_run, cohort_slides, one_torch_thread):
    truth = e2e_run["truth"]
    ds = fused_dataset(e2e_run["store"], cohort_slides, truth)
    assert {"wsi", "expression"} <= set(ds.modality_names)
    model = train(ds, ds.modality_names, "attention", seed=0, epochs=60)
    for i in range(ds.n_patients):  # the done-when: Shapley values add up for every patient
        res = fusion_model_shapley(model, ds, i)
        assert abs(res["base_value"] + sum(res["values"].values()) - res["probability"]) < 1e-6
    # reported, not a done-when figure: the model leans on expression whatever the per-patient planted strength
    print("fused model, modality share:", modality_hits(model, ds, truth))
    # controlled: one modality carries the label for a known half of the patients
    c = controlled_hits(seed=0)
    print("controlled:", c)
    assert c["trained_hit_rate"] >= 0.9
    assert abs(c["random_hit_rate"] - 0.5) < 0.25
