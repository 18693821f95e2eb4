"""Tests for fusion.bilinear (the 'bilinear' strategy) and fusion.tuning (its options chosen by inner CV)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.bilinear import BilinearFusion, LinearEncoder
from fusion.errors import FusionConfigError
from fusion.experiment_data import ExperimentData, ExperimentOptions
from fusion.model import FusionModel
from fusion.tuning import option_candidates, strategy_options, tuned_options


def test_forward_is_the_additive_model_plus_one_bilinear_form_per_pair():
    torch.manual_seed(0)
    strat = BilinearFusion(n_modalities=3, embed_dim=2, n_outputs=1)
    z = torch.randn(4, 3, 2)
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, True], [True, True, False]])
    out = strat(z, present)[:, 0]
    w, b = strat.linear.weight[0].reshape(3, 2), strat.linear.bias[0]
    for i in range(4):
        zi = z[i] * present[i].unsqueeze(-1)  # a missing modality: all its terms vanish
        expect = b + (w * zi).sum()
        for p, (m, n) in enumerate([(0, 1), (0, 2), (1, 2)]):
            expect = expect + zi[m] @ strat.bilinear[p, 0] @ zi[n]
        assert torch.allclose(out[i], expect, atol=1e-6)


def test_fusion_model_gives_flat_modalities_the_strategys_linear_encoder():
    model = FusionModel(["a", "b"], {"a": 5, "b": 3}, "bilinear", 1, embed_dim=2)
    assert all(isinstance(model.encoders[m], LinearEncoder) for m in ("a", "b"))
    early = FusionModel(["a", "b"], {"a": 5, "b": 3}, "early", 1, embed_dim=2)
    assert not isinstance(early.encoders["a"], LinearEncoder)


def test_option_grid_and_overrides():
    cands = option_candidates("bilinear")
    grid = BilinearFusion.option_grid
    assert len(cands) == np.prod([len(v) for v in grid.values()])
    assert cands[0] == {k: v[0] for k, v in grid.items()}
    assert option_candidates("early") == [{}]
    opts = ExperimentOptions()
    assert strategy_options(opts, "early") is opts
    assert strategy_options(opts, "bilinear").n_components == BilinearFusion.option_overrides["n_components"]


def test_an_override_that_is_not_an_option_is_refused(monkeypatch):
    monkeypatch.setattr(BilinearFusion, "option_grid", {"width": (1, 2)})
    with pytest.raises(FusionConfigError, match="bilinear.*'width'"):
        option_candidates("bilinear")


def xor_data(n: int = 96, seed: int = 0) -> ExperimentData:
    """Two modalities of 6 features, the first 3 of each a noisy copy of its binary latent; the label is the XOR
    of the two latents (no modality alone, and no model additive over them, says anything of it)."""
    rng = np.random.default_rng(seed)
    sa, sb = rng.permutation(np.arange(n) % 2), rng.integers(0, 2, n)
    pats = [f"P{i:03d}" for i in range(n)]
    feats = {}
    for name, s in (("a", sa), ("b", sb)):
        x = rng.normal(size=(n, 6))
        x[:, :3] = (2 * s - 1)[:, None] + 0.5 * rng.normal(size=(n, 3))
        feats[name] = pd.DataFrame(x, index=pats, columns=[f"{name}{j}" for j in range(6)])
    y = sa ^ sb
    return ExperimentData(pats, feats, "classification", pd.DataFrame({"label": y}, index=pats), classes=["n", "y"])


def _splits(data: ExperimentData, k: int = 2) -> list:
    from sklearn.model_selection import StratifiedKFold

    y = data.target["label"].to_numpy()
    pats = np.array(data.patients)
    return [(pats[a].tolist(), pats[b].tolist())
            for a, b in StratifiedKFold(k, shuffle=True, random_state=0).split(pats, y)]


def test_bilinear_reads_an_xor_of_two_modalities_that_the_logistic_baseline_cannot(one_torch_thread):
    from fusion.experiment import run_baseline, run_neural

    data = xor_data()
    splits = _splits(data)
    opts = ExperimentOptions(strategies=("bilinear",), robustness=False)
    bil = run_neural(data, splits, opts, "bilinear", ["a", "b"], None)
    base = run_baseline(data, splits, opts, ["a", "b"])
    assert bil.mean > 0.9 and base.mean < 0.7, (bil.folds, base.folds)
    # per fold: the grid values its inner CV chose and every candidate's inner score
    assert len(bil.extra["tuned"]) == len(splits)
    assert set(bil.extra["tuned"][0]["inner"]) == {",".join(f"{k}={v}" for k, v in c.items())
                                                   for c in option_candidates("bilinear")}


def test_tuning_sees_only_the_training_patients(one_torch_thread, monkeypatch):
    import fusion.folds

    data = xor_data(n=48)
    tr = data.patients[:36]
    seen = set()
    real = fusion.folds.fit_predict_fold

    def spy(data_, a, b, *args):
        seen.update(a)
        seen.update(b)
        return real(data_, a, b, *args)

    monkeypatch.setattr(fusion.folds, "fit_predict_fold", spy)
    monkeypatch.setattr(BilinearFusion, "option_grid", {"weight_decay": (0.1, 1.0)})
    opts, info = tuned_options(data, tr, ExperimentOptions(), "bilinear", ["a", "b"], None, seed=0)
    assert seen == set(tr)
    assert info["options"]["weight_decay"] == opts.weight_decay
    assert opts.n_components == BilinearFusion.option_overrides["n_components"]
    assert all(v is not None for v in info["inner"].values())
