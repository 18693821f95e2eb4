"""Bag modalities in the experiment engine: planted tumour tiles recovered by MIL and co-attention, bag
preprocessing fitted on training patients only, every strategy and head with a bag mixed with a flat modality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.bags import training_instances
from fusion.errors import FusionConfigError
from fusion.experiment import ExperimentOptions, fold_dataset, run_experiment
from fusion.model import FusionModel
from imaging.mil import GatedAttentionMIL
from tests.fusion.planted_bags import planted_bags, stratified_splits

MIL = {"wsi": lambda d: GatedAttentionMIL(d, embed_dim=16, attn_dim=16)}


def _by_name(results):
    return {r.name: r for r in results}


def test_attention_finds_the_planted_tumour_tiles_that_the_bag_mean_misses():
    data = planted_bags(n=80, flat_shift=0.25, seed=0)
    splits = stratified_splits(data, k=3)
    opts = ExperimentOptions(strategies=("coattention",), epochs=40, lr=3e-3, robustness=False, encoder_factories=MIL)
    res = _by_name(run_experiment(data, splits, opts))
    assert res["single:wsi"].mean > 0.8  # gated-attention MIL on the bag alone
    assert res["fusion:coattention"].mean > 0.75  # weak genomic queries over the tiles
    assert res["single:expr"].mean < 0.75  # the flat modality alone is weak
    assert res["baseline:logistic"].mean < 0.75  # bag means (+ expr): the planted signal cancels in the mean
    # without an encoder factory the default encoder pools bags by masked mean: near chance on these bags
    plain = run_experiment(data, splits, ExperimentOptions(strategies=(), epochs=40, lr=3e-3, baseline=False,
                                                            modality_filter=["wsi"]))
    assert plain[0].name == "single:wsi" and plain[0].mean < 0.7


def test_bag_preprocessing_uses_training_patients_only():
    data = planted_bags(n=30, seed=3, no_bag=0, no_flat=0)
    pats = data.patients
    train, val = pats[:20], pats[20:]
    opts = ExperimentOptions(n_components=None, bag_components=None)
    ds, a, b = fold_dataset(data, train, val, opts, ["wsi"])
    # z-scored with the mean / std of the training patients' instances, computed here independently
    inst = np.concatenate([data.bags["wsi"][p] for p in train]).astype(np.float64)
    mu, sd = inst.mean(axis=0), inst.std(axis=0)
    np.testing.assert_allclose(ds.modalities["wsi"].values[0].numpy(), (data.bags["wsi"][train[0]] - mu) / sd,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ds.modalities["wsi"].values[25].numpy(), (data.bags["wsi"][val[5]] - mu) / sd,
                               rtol=1e-4, atol=1e-4)
    # a validation patient with huge values changes nothing for the training patients (also with PCA and subsampling)
    for o in (opts, ExperimentOptions(bag_components=3, bag_fit_instances=200)):
        before = fold_dataset(data, train, val, o, ["wsi"])[0].modalities["wsi"]
        data.bags["wsi"][val[0]] = data.bags["wsi"][val[0]] * 0 + 1e6
        after = fold_dataset(data, train, val, o, ["wsi"])[0].modalities["wsi"]
        for i in range(len(train)):
            assert torch.equal(before.values[i], after.values[i])
        assert before.dim == (8 if o.bag_components is None else 3)
        data.bags["wsi"][val[0]] = planted_bags(n=30, seed=3, no_bag=0, no_flat=0).bags["wsi"][val[0]]


def test_training_instances_subsample_is_bounded_and_drawn_from_the_bags():
    bags = [np.full((n, 2), i, dtype=np.float32) for i, n in enumerate([5, 50, 500])]
    rows = training_instances(bags, 100, seed=0)
    assert rows.shape == (100, 2)
    counts = np.bincount(rows[:, 0].astype(int), minlength=3)
    assert counts.sum() == 100 and counts[2] > counts[1] > 0  # proportional to bag size, in expectation
    assert training_instances(bags, 1000, seed=0).shape == (555, 2)


def test_every_pooled_strategy_with_a_bag_modality_mixed_with_a_flat_one():
    data = planted_bags(n=60, flat_shift=0.25, seed=4)
    opts = ExperimentOptions(strategies=("early", "late", "attention", "kronecker"), epochs=20, lr=3e-3,
                             encoder_factories=MIL, singles=False, baseline=False, robustness=True)
    res = _by_name(run_experiment(data, stratified_splits(data, k=3), opts))
    assert sorted(res) == ["fusion:attention", "fusion:early", "fusion:kronecker", "fusion:late"]
    for r in res.values():
        assert r.metric == "auc" and np.isfinite(r.folds).all() and len(r.oof) == 60
        assert set(r.extra["contributions"]) == {"expr", "wsi"}  # drop-one on the ragged bag works
    # the bag carries the planted label: dropping it costs more than dropping the weak flat modality, in every model
    assert all(r.extra["contributions"]["wsi"] > r.extra["contributions"]["expr"] for r in res.values())


def test_coattention_with_both_survival_heads():
    data = planted_bags(n=60, flat_shift=0.25, seed=4, task="survival")
    opts = ExperimentOptions(strategies=("coattention",), heads=("cox", "nll"), epochs=40, lr=3e-3, nll_lr=3e-3,
                             encoder_factories=MIL, singles=False, baseline=False, robustness=False)
    res = _by_name(run_experiment(data, stratified_splits(data, k=3), opts))
    assert sorted(res) == ["fusion:coattention", "fusion:coattention/nll"]
    assert res["fusion:coattention"].mean > 0.65  # planted high-risk group found in the tiles
    nll = res["fusion:coattention/nll"]
    assert nll.head == "nll" and np.isfinite(nll.folds).all() and nll.mean > 0.5


def test_coattention_needs_a_bag_and_a_flat_modality():
    data = planted_bags(n=30, seed=5)
    flat_only = type(data)(patients=data.patients, features=data.features, task=data.task, target=data.target,
                           classes=data.classes)
    splits = stratified_splits(flat_only, k=2)
    with pytest.raises(FusionConfigError, match=r"strategies: 'coattention' needs at least one bag modality"):
        run_experiment(flat_only, splits, ExperimentOptions(strategies=("coattention",)))
    with pytest.raises(FusionConfigError, match=r"strategies: 'coattention'"):
        FusionModel(["a", "b"], {"a": 3, "b": 4}, "coattention", 1, embed_dim=8)
    with pytest.raises(FusionConfigError, match=r"select: strategy 'coattention'"):
        ExperimentOptions(select=("coattention",))


def test_coattention_weights_respect_the_bag_mask_and_absent_bags():
    torch.manual_seed(0)
    model = FusionModel(["expr", "wsi"], {"expr": 3, "wsi": 4}, "coattention", 1, embed_dim=8,
                        bag_modalities=["wsi"]).eval()
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    batch = {"expr": {"values": torch.randn(3, 3), "mask": None, "present": torch.tensor([True, False, True])},
             "wsi": {"values": torch.randn(3, 3, 4), "mask": mask, "present": torch.tensor([True, True, False])}}
    out = model(batch)
    w = model.strategy.last_attention[1]  # [B, n_flat + 1 slide query, T]
    assert w.shape == (3, 2, 3)
    torch.testing.assert_close(w[:2].sum(dim=-1), torch.ones(2, 2))  # each query's weights sum to 1 over valid tiles
    assert torch.all(w[0, :, 2] == 0) and torch.all(w[1, :, 1:] == 0) and torch.all(w[2] == 0)
    batch["wsi"]["values"][2] = 1e4  # the absent bag's values are never read
    batch["wsi"]["values"][0, 2] = -1e4  # nor the padding
    assert torch.equal(model(batch), out)
