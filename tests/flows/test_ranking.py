"""Open Targets-style scoring: transforms, harmonic sums and the weighted harmonic sum computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flows.results.ranking import (EVIDENCE_TYPES, SCORING_FILE, ScoringError, SourceSpec, harmonic_sums,
                           load_scoring_config, parse_weights, rank_targets, score_values, weighted_harmonic_sum)


def test_transforms_by_hand():
    sat = SourceSpec("s", "rna_expression", "x", "saturating", scale=2.0, max_fdr=0.05)
    got = score_values(np.array([2.0, -1.0, np.nan, 4.0]), sat, fdr=np.array([0.01, 0.01, 0.01, 0.2]))
    np.testing.assert_allclose(got, [1 - math.exp(-1), 0.0, 0.0, 0.0])  # last one: FDR above 0.05
    lin = SourceSpec("m", "tractability", "pchembl", "linear", low=5.0, high=9.0, factor=0.5)
    np.testing.assert_allclose(score_values(np.array([7.0, 4.0, 10.0]), lin), [0.25, 0.0, 0.5])
    rel = SourceSpec("a", "model_attribution", "attr", "relative")
    np.testing.assert_allclose(score_values(np.array([1.0, 4.0, 2.0]), rel), [0.25, 1.0, 0.5])


def test_harmonic_sum_within_a_type_by_hand():
    rows = pd.DataFrame({"gene": ["A", "A", "B", "C"], "evidence_type": ["spatial_tumour_region"] * 3 + ["copy_number"],
                         "score": [0.5, 1.0, 0.8, 0.3]})
    hs = harmonic_sums(rows).set_index(["gene", "evidence_type"])["score"]
    # spatial: the fullest gene (A) has 2 rows -> max sum 1 + 1/4
    assert hs["A", "spatial_tumour_region"] == pytest.approx((1.0 + 0.5 / 4) / 1.25)
    assert hs["B", "spatial_tumour_region"] == pytest.approx(0.8 / 1.25)
    assert hs["C", "copy_number"] == pytest.approx(0.3)  # one row at most: the score itself


def test_weighted_harmonic_sum_by_hand():
    w = np.array([1.0, 0.5])
    got = weighted_harmonic_sum(np.array([[1.0, 0.5], [0.2, 1.0], [1.0, 1.0]]), w)
    norm = 1.0 + 0.5 / 4
    # row 0: weighted (1, 0.25) -> 1 + 0.25/4; row 1: weighted (0.2, 0.5) sorted (0.5, 0.2) -> 0.5 + 0.2/4
    np.testing.assert_allclose(got, [(1 + 0.25 / 4) / norm, (0.5 + 0.2 / 4) / norm, 1.0])
    # one type weighted alone: the score is that type's score
    m = np.random.default_rng(0).random((5, 3))
    np.testing.assert_allclose(weighted_harmonic_sum(m, np.array([0.0, 2.0, 0.0])), m[:, 1])


def test_the_combination_beats_stronger_single_evidence():
    m = pd.DataFrame({"rna_expression": [0.85, 0.99, 0.0, 0.0], "copy_number": [0.85, 0.0, 0.99, 0.0],
                      "survival_association": [0.85, 0.0, 0.0, 0.99]},
                     index=["TARGET", "DE_ONLY", "CN_ONLY", "SURV_ONLY"])
    weights = {"rna_expression": 1.0, "copy_number": 1.0, "survival_association": 1.0}
    out = rank_targets(m, weights)
    assert out["gene"].tolist()[0] == "TARGET" and out["rank"].tolist() == [1, 2, 3, 4]
    assert out["score"].iloc[0] == pytest.approx(0.85)  # equal scores everywhere: the score itself
    # each alone, the specialist wins; ties are broken by gene symbol
    assert rank_targets(m, {"copy_number": 1.0})["gene"].iloc[0] == "CN_ONLY"
    assert rank_targets(m, {"somatic_mutation": 1.0})["gene"].tolist() == sorted(m.index)


def test_parse_weights_replaces_and_rejects_bad_input():
    w = parse_weights("rna_expression=2, copy_number=0.5")
    assert w["rna_expression"] == 2.0 and w["copy_number"] == 0.5
    assert set(w) == set(EVIDENCE_TYPES) and w["survival_association"] == 0.0
    for bad, message in (("rna_expression=-1", "finite number >= 0"), ("astrology=1", "unknown evidence type"),
                         ("tractability=1", "not part of the association score"), ("rna_expression", "TYPE=WEIGHT"),
                         ("rna_expression=abc", "must be a number"), ("rna_expression=0", "at least one")):
        with pytest.raises(ScoringError, match=message):
            parse_weights(bad)


def test_default_config_is_versioned_and_uses_stable_names():
    cfg = load_scoring_config()
    assert cfg.version and set(cfg.weights) == set(EVIDENCE_TYPES)
    assert {s.type for s in cfg.sources.values()} == set(EVIDENCE_TYPES)
    assert set(cfg.tractability) == {"measured", "predicted"} and cfg.tractability["predicted"].factor < 1
    assert SCORING_FILE.name == "evidence_weights.yaml"


def test_bad_config_names_file_and_field(tmp_path):
    bad = tmp_path / "w.yaml"
    bad.write_text("version: x\nweights: {rna_expression: 1}\nsources:\n  s: {type: rna_expression, transform: cubic}\n")
    with pytest.raises(ScoringError, match=r"w.yaml: source 's' field 'transform'.*found 'cubic'"):
        load_scoring_config(bad)
