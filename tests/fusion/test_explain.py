"""Tests for fusion.explain: exact Shapley values (hand-computed game, efficiency on a trained model, absent
modalities) and MIL attention over a patient's bag."""

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionDataError
from fusion.explain import bag_attention, exact_shapley, fusion_model_shapley
from fusion.model import FusionModel
from fusion.train import TrainConfig, fit, predict
from imaging.mil import GatedAttentionMIL


def test_exact_shapley_matches_a_hand_computed_three_player_game():
    game = {"": 0.0, "a": 1.0, "b": 2.0, "c": 0.0, "ab": 4.0, "ac": 1.0, "bc": 3.0, "abc": 6.0}
    calls = []

    def value(s):
        calls.append(s)
        return game["".join(sorted(s))]

    base, phi = exact_shapley(value, ["a", "b", "c"])
    # phi_a = 1/3*1 + 1/6*(4-2) + 1/6*(1-0) + 1/3*(6-3) = 11/6; phi_b = 10/3; phi_c = 5/6 (worked by hand)
    assert base == 0.0
    assert phi == pytest.approx({"a": 11 / 6, "b": 10 / 3, "c": 5 / 6}, abs=1e-12)
    assert len(set(calls)) == len(calls) == 8  # every coalition evaluated exactly once
    # a dummy player gets 0, a symmetric pair gets equal shares
    base, phi = exact_shapley(lambda s: 3.0 * ("x" in s) + 3.0 * ("y" in s) + 5.0 * ("x" in s and "y" in s),
                              ["x", "y", "dummy"])
    assert phi["dummy"] == 0.0 and phi["x"] == pytest.approx(5.5) and phi["y"] == pytest.approx(5.5)
    with pytest.raises(FusionDataError, match="unique"):
        exact_shapley(lambda s: 0.0, ["a", "a"])


def _cohort(n=90, seed=0, n_classes=3):
    """Three modalities: 'expr' (vector, planted), 'clin' (vector, noise, missing for ~30%) and 'wsi' (bags of
    8-20 instances, planted in the instances whose first feature is high)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % n_classes)
    patients = [f"TCGA-FX-{i:04d}" for i in range(1, n + 1)]
    expr = rng.normal(size=(n, 6))
    expr[:, 0] += 1.2 * (y - 1)
    clin = pd.DataFrame(rng.normal(size=(n, 3)), index=patients)[rng.random(n) > 0.3]
    bags = []
    for i in range(n):
        if rng.random() < 0.15:
            bags.append(None)
            continue
        t = int(rng.integers(8, 21))
        b = rng.normal(size=(t, 4)).astype(np.float32)
        key = rng.random(t) < 0.3
        b[key, 0] += 3.0
        b[key, 1] += 1.5 * (y[i] - 1)
        bags.append(b)
    ds = MultimodalDataset.from_frames({"expr": pd.DataFrame(expr, index=patients), "clin": clin}, patients, y=y)
    mods = dict(ds.modalities)
    mods["wsi"] = ModalityData.from_bags("wsi", bags)
    return MultimodalDataset(patients=patients, modalities=mods, y=ds.y)


def _trained(task="multiclass", strategy="attention", seed=0):
    ds = _cohort(n_classes=2 if task == "binary" else 3, seed=seed)
    if task == "survival":
        y = ds.y.numpy()
        ds = MultimodalDataset(ds.patients, ds.modalities, y=(np.exp(-0.5 * y) * 100 + np.arange(len(y)) * 0.01,
                                                               np.ones(len(y), bool)))
    idx = np.arange(ds.n_patients)
    ds = ds.standardise(idx)
    n_out = {"multiclass": 3, "binary": 1, "survival": 1}[task]
    model = FusionModel.for_dataset(ds, ["expr", "clin", "wsi"], strategy, n_out, embed_dim=8, task=task,
                                    encoder_factories={"wsi": lambda d: GatedAttentionMIL(d, embed_dim=8, attn_dim=8)})
    fit(model, ds, idx, TrainConfig(epochs=40, seed=seed, num_threads=1))
    return model, ds


@pytest.mark.parametrize("task,strategy", [("multiclass", "attention"), ("binary", "late"), ("survival", "early")])
def test_shapley_values_add_up_to_the_prediction_for_every_patient(task, strategy, one_torch_thread):
    model, ds = _trained(task, strategy)
    preds = predict(model, ds, np.arange(ds.n_patients))
    presence = ds.presence(model.modalities).numpy()
    for i in range(ds.n_patients):
        res = fusion_model_shapley(model, ds, i)
        total = res["base_value"] + sum(res["values"].values())
        assert abs(total - res["probability"]) < 1e-6
        # the explained value is the model's own prediction for the patient
        if task == "multiclass":
            assert res["predicted"] == int(preds[i].argmax())
            assert res["probability"] == pytest.approx(float(preds[i].max()), abs=1e-5)
        elif task == "binary":
            p1 = float(preds[i])
            assert res["predicted"] == int(p1 >= 0.5)
            assert res["probability"] == pytest.approx(max(p1, 1 - p1), abs=1e-5)
        else:
            assert res["predicted"] is None and res["probability"] == pytest.approx(float(preds[i]), abs=1e-5)
        # a modality the patient lacks gets exactly 0
        for j, m in enumerate(model.modalities):
            if not presence[i, j]:
                assert res["values"][m] == 0.0
    # the planted modality carries the prediction: it gets the largest mean |share|
    shares = pd.DataFrame([fusion_model_shapley(model, ds, i)["values"] for i in range(ds.n_patients)]).abs().mean()
    assert shares["clin"] < max(shares["expr"], shares["wsi"])


def test_shapley_of_another_class_and_temperature(one_torch_thread):
    model, ds = _trained("multiclass")
    i = int(np.flatnonzero(ds.presence(model.modalities).numpy().all(axis=1))[0])
    out = predict(model, ds, [i], raw=True)[0]
    for target in range(3):
        for temperature in (1.0, 2.5):
            res = fusion_model_shapley(model, ds, i, target=target, temperature=temperature)
            expect = torch.softmax(torch.as_tensor(out, dtype=torch.float64) / temperature, 0)[target]
            assert res["probability"] == pytest.approx(float(expect), abs=1e-6)
            assert res["base_value"] + sum(res["values"].values()) == pytest.approx(res["probability"], abs=1e-9)
    # over the classes, the Shapley values of the probabilities sum to 0 per modality (probabilities sum to 1)
    per_class = [fusion_model_shapley(model, ds, i, target=c)["values"] for c in range(3)]
    for m in model.modalities:
        assert sum(v[m] for v in per_class) == pytest.approx(0.0, abs=1e-9)


def test_bag_attention_is_the_mil_encoders_weights_in_bag_order(one_torch_thread):
    model, ds = _trained("multiclass")
    bags = ds.modalities["wsi"]
    with_bag = np.flatnonzero(bags.present.numpy())
    for i in with_bag[:10]:
        att = bag_attention(model, ds, int(i))
        assert att.shape == (bags.values[i].shape[0],)
        assert att.sum() == pytest.approx(1.0, abs=1e-6) and (att >= 0).all()
        direct = model.encoders["wsi"].attention(bags.values[i][None])[0].detach().numpy()
        np.testing.assert_allclose(att, direct, atol=1e-6)
    lacking = int(np.flatnonzero(~bags.present.numpy())[0])
    with pytest.raises(FusionDataError, match="has no 'wsi' bag"):
        bag_attention(model, ds, lacking)
    mean_pool = FusionModel.for_dataset(ds, ["expr", "wsi"], "early", 3, embed_dim=8, task="multiclass")
    with pytest.raises(FusionDataError, match="no MIL attention"):
        bag_attention(mean_pool, ds, int(with_bag[0]))
    with pytest.raises(FusionDataError, match="no bag modality 'expr'"):
        bag_attention(model, ds, int(with_bag[0]), "expr")
# --- to append to tests/fusion/test_explain.py once captum is a dependency ---


def _hand_written_gradient_x_input(model, ds, modality, idx, target=None):
    """The former fusion.attribution.feature_attribution (torch.autograd by hand), kept as the reference."""
    rows = idx[ds.modalities[modality].present.numpy()[idx]]
    batch = ds.to_batch(rows, model.modalities)
    x = batch[modality]["values"].clone().requires_grad_(True)
    batch[modality]["values"] = x
    out = model(batch).float()
    if out.shape[1] == 1:
        selected = out[:, 0]
    else:
        cls = out.argmax(dim=1) if target is None else torch.full((out.shape[0],), int(target))
        selected = out.gather(1, cls[:, None])[:, 0]
    (grad,) = torch.autograd.grad(selected.sum(), x)
    gxi = (grad * x).abs()
    if gxi.dim() == 3:
        gxi = (gxi * batch[modality]["mask"].unsqueeze(-1).to(gxi.dtype)).sum(dim=1)
    return (gxi.sum(dim=0).double() / len(rows)).detach().numpy()


@pytest.mark.parametrize("task", ["multiclass", "binary", "survival"])
def test_captum_feature_attribution_equals_the_hand_written_gradient_x_input(task, one_torch_thread):
    from fusion.attribution import feature_attribution

    model, ds = _trained(task, "attention")
    idx = np.arange(ds.n_patients)
    for modality in ("expr", "wsi"):
        targets = [None, 2] if task == "multiclass" else [None]
        for target in targets:
            got = feature_attribution(model, ds, modality, idx, target=target, chunk=16)
            ref = _hand_written_gradient_x_input(model, ds, modality, idx, target)
            np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
            assert got.max() > 1e-3  # not a trivial zero map


def test_input_attribution_is_one_patients_share_of_feature_attribution(one_torch_thread):
    from fusion.attribution import feature_attribution
    from fusion.explain import input_attribution

    model, ds = _trained("multiclass", "attention")
    has = np.flatnonzero(ds.modalities["wsi"].present.numpy())
    per_patient = [np.abs(input_attribution(model, ds, int(i), "wsi")).sum(axis=0) for i in has]
    np.testing.assert_allclose(np.mean(per_patient, axis=0), feature_attribution(model, ds, "wsi", has), atol=1e-5)
    i = int(has[0])
    assert input_attribution(model, ds, i, "wsi").shape == (ds.modalities["wsi"].values[i].shape[0], 4)
    assert input_attribution(model, ds, i, "expr", target=1).shape == (6,)
    lacking = int(np.flatnonzero(~ds.modalities["wsi"].present.numpy())[0])
    with pytest.raises(FusionDataError, match="has no 'wsi'"):
        input_attribution(model, ds, lacking, "wsi")
