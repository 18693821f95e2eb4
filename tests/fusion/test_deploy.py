"""Deployed models: the configuration choice, the refit with the engine's preprocessing, calibration on the
out-of-fold predictions, the saved folder read back to the same predictions, a planted signal on new patients."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from fusion.calibration import fit_temperature, oof_log_probs
from fusion.encoders import MLPEncoder
from fusion.errors import FusionConfigError, FusionDataError
from fusion.experiment import ExperimentData, ExperimentOptions, ModelResult, fold_dataset, run_neural
from fusion.deploy import deploy_choice, fit_deployed, load_deployed, raw_inputs, save_deployed
from fusion.train import predict
from tests.fusion.experiment_tables import kfold_splits, planted_table
from tests.fusion.planted_bags import planted_bags, stratified_splits

FAST = dict(epochs=30, n_components=8, robustness=False, lr=3e-3, num_threads=1)


def _row(name, strategy, mean, mods=("a", "b"), **extra):
    return {"name": name, "strategy": strategy, "modalities": list(mods), "head": None, "metric": "auc",
            "mean": mean, "std": 0.0, "folds": [mean] * 5, **extra}


ROWS = [_row("baseline:logistic", "baseline", 0.90), _row("fusion:experts", "experts", 0.88),
        _row("single:a", "single", 0.80, ("a",)), _row("fusion:late", "late", 0.78),
        _row("fusion:early", "early", 0.70)]


def test_deploy_choice_most_frequent_choice_ties_to_higher_mean():
    best = _row("best", "best", 0.8, extra={"chosen": ["fusion:late", "single:a", "fusion:late", "single:a",
                                                         "fusion:early"]})
    strategy, mods, head, why = deploy_choice(ROWS + [best])
    assert (strategy, mods, head) == ("single", ["a"], None)  # 2 votes each; single:a has the higher mean
    assert why["row"] == "single:a" and why["best_row_choices"][0] == "fusion:late" and "2/5" in why["reason"]


def test_deploy_choice_deploys_a_classical_choice_and_says_so():
    best = _row("best", "best", 0.9, chosen=["fusion:experts"] * 3 + ["fusion:late"] * 2)
    strategy, mods, _, why = deploy_choice(ROWS + [best])
    assert (strategy, mods) == ("experts", ["a", "b"]) and why["row"] == "fusion:experts"
    assert "3/5" in why["reason"] and "classical" in why["reason"]
    # no best row: the row with the highest mean, classical included
    assert deploy_choice(ROWS)[3]["row"] == "baseline:logistic"
    # a '+select' row deploys its most frequent subset
    sel = _row("fusion:late+select", "late", 0.95, ("a", "b"),
               tuned=[{"modalities": ["a"]}, {"modalities": ["a", "b"]}, {"modalities": ["a"]}])
    strategy, mods, _, why = deploy_choice(ROWS + [sel])
    assert (strategy, mods) == ("single", ["a"]) and "2/3" in why["reason"]
    # a choice that is no fitted model (a published reference row): the row with the highest mean instead
    pub = _row("published", "published", 0.99, folds=[])
    why = deploy_choice(ROWS + [pub, _row("best", "best", 0.9, chosen=["published"] * 3)])[3]
    assert why["row"] == "baseline:logistic" and "not a fitted model" in why["reason"]
    with pytest.raises(FusionDataError, match="fusion:nope"):
        deploy_choice(ROWS + [_row("best", "best", 0.9, chosen=["fusion:nope"])])
    with pytest.raises(FusionDataError, match="no model"):
        deploy_choice([pub])


def _subset(data: ExperimentData, pats: list[str]) -> ExperimentData:
    return ExperimentData(patients=pats, features={m: f.loc[pats] for m, f in data.features.items()},
                          task=data.task, target=data.target.loc[pats], classes=data.classes,
                          bags={m: {p: b[p] for p in pats if p in b} for m, b in (data.bags or {}).items()} or None)


@pytest.fixture(scope="module")
def deployed_binary():
    full = planted_table("classification", n=200, seed=3, n_classes=2)
    train = _subset(full, full.patients[:150])
    opts = ExperimentOptions(**FAST, strategies=("late",))
    late = run_neural(train, kfold_splits(train, k=3), opts, "late", ["a", "b"], None)
    best = ModelResult("best", "best", ["a", "b"], None, "auc", late.folds, late.fold_metrics, late.oof,
                       {"chosen": ["fusion:late"] * 3})
    dm = fit_deployed(train, [late, best], opts, run_id="run-x", code_version="abc")
    return full, train, opts, late, dm


def test_fit_deployed_refits_the_choice_and_calibrates_on_oof(deployed_binary):
    full, train, opts, late, dm = deployed_binary
    assert (dm.task, dm.strategy, dm.modalities, dm.classes) == ("diagnosis", "late", ["a", "b"], ["class0", "class1"])
    assert dm.version.startswith("diagnosis-") and dm.chosen_by["run_id"] == "run-x" and dm.n_train == 150
    pats, _, logp = oof_log_probs(late.oof)
    assert dm.temperature == pytest.approx(fit_temperature(logp, train.target.loc[pats, "label"].to_numpy()))
    cal = dm.info["calibration"]
    assert cal["n"] == 150 and 0 <= cal["ece_after"] <= cal["ece_before"] + 1e-9
    # the training cohort through the deployed path = the engine's fold dataset through the same model
    ds_fit, idx, _ = fold_dataset(train, train.patients, [], opts, ["a", "b"])
    ds = dm.dataset(raw_inputs(train, ["a", "b"]))
    assert ds.patients == train.patients
    np.testing.assert_allclose(dm.raw_predict(ds), predict(dm.model, ds_fit, idx), atol=1e-6)
    probs = dm.predict(ds)
    assert probs.shape == (150, 2) and np.allclose(probs.sum(axis=1), 1.0)
    logit = predict(dm.model, ds, idx, raw=True)[:, 0]  # the calibrated P(class 1) is sigmoid(logit / T)
    np.testing.assert_allclose(probs[:, 1], expit(logit / dm.temperature), atol=1e-9)
    assert np.abs(probs[:, 1] - dm.raw_predict(ds)).max() > 1e-3  # T != 1 changed the probabilities


def test_planted_signal_recovered_on_new_patients(deployed_binary):
    full, train, _, _, dm = deployed_binary
    new = full.patients[150:]
    inputs = {m: {p: full.features[m].loc[p].to_numpy() for p in new} for m in ("a", "b")}
    p1 = dm.predict(dm.dataset({**inputs, "ct": {new[0]: np.zeros(3)}}))[:, 1]  # modalities it lacks: ignored
    assert roc_auc_score(full.target.loc[new, "label"], p1) > 0.85
    # a patient with modality 'a' only (b absent) is still predicted from 'a'
    shuffled = full.features["a"].loc[new[0]].iloc[::-1]  # a pd.Series is aligned by column name
    np.testing.assert_allclose(dm.predict(dm.dataset({"a": {new[0]: shuffled}})),
                               dm.predict(dm.dataset({"a": {new[0]: inputs["a"][new[0]]}})), atol=1e-12)
    two = dm.predict(dm.dataset({"a": {new[0]: inputs["a"][new[0]]}, "ct": {"NEW-1": np.zeros(3)}}))
    assert two.shape == (2, 2) and abs(two[0, 1] - 0.5) > 1e-3
    prior = float(dm.model.fallback_prediction[0])  # NEW-1 has none of the model's modalities: calibrated prior
    assert two[1, 1] == pytest.approx(expit(np.log(prior / (1 - prior)) / dm.temperature))


def test_multiclass_deployed_probabilities_are_tempered_softmax():
    data = planted_table("classification", n=90, seed=4, n_classes=3)
    opts = ExperimentOptions(**FAST, strategies=("late",))
    single = run_neural(data, kfold_splits(data, k=2), opts, "single", ["a"], None)
    dm = fit_deployed(data, [single], opts)
    ds = dm.dataset(raw_inputs(data, ["a"]))
    probs = dm.predict(ds)
    logits = predict(dm.model, ds, np.arange(ds.n_patients), raw=True)
    np.testing.assert_allclose(probs, softmax(logits / dm.temperature, axis=1), atol=1e-9)
    assert dm.classes == ["class0", "class1", "class2"] and dm.temperature != 1.0
    assert roc_auc_score(data.target["label"], probs, multi_class="ovr") > 0.8


def test_save_load_round_trip(deployed_binary, tmp_path):
    full, train, _, _, dm = deployed_binary
    folder = save_deployed(dm, tmp_path / "models" / "diagnosis")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["version"] == dm.version and meta["temperature"] == dm.temperature and meta["n_train"] == 150
    assert meta["code_version"] == "abc" and "ece_before" in meta["calibration"] and meta["options"]["epochs"] == 30
    back = load_deployed(tmp_path, "diagnosis")
    ds = back.dataset(raw_inputs(full, ["a", "b"]))
    np.testing.assert_allclose(back.predict(ds), dm.predict(ds), atol=1e-6)
    np.testing.assert_allclose(back.embed(ds), dm.embed(ds), atol=1e-6)
    mask = np.zeros((ds.n_patients, 2), dtype=bool)
    mask[:, 0] = True
    np.testing.assert_allclose(back.predict(ds, present=mask), dm.predict(ds, present=mask), atol=1e-6)
    assert not np.allclose(dm.predict(ds, present=mask), dm.predict(ds))  # dropping 'b' changes the answer
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["diagnosis"]  # no temp folder left
    with pytest.raises(FusionDataError, match="survival/model.json"):
        load_deployed(tmp_path, "survival")
    (folder / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FusionDataError, match="model.pt"):
        load_deployed(tmp_path, "diagnosis")


def test_survival_model_with_a_bag_round_trips(tmp_path):
    data = planted_bags(n=60, task="survival", seed=1)
    opts = ExperimentOptions(**FAST, strategies=("early",), bag_batch_size=None,
                             encoder_factories={"wsi": partial(MLPEncoder, embed_dim=16, hidden=16)})
    early = run_neural(data, stratified_splits(data, k=2), opts, "early", ["expr", "wsi"], "cox")
    dm = fit_deployed(data, [early], opts)
    assert dm.task == "survival" and dm.temperature == 1.0 and dm.info["calibration"] is None
    load = load_deployed(save_deployed(dm, tmp_path / "models" / "survival").parents[1], "survival")
    ds = load.dataset(raw_inputs(data, ["expr", "wsi"]))
    risk = load.predict(ds)
    np.testing.assert_allclose(risk, dm.predict(ds), atol=1e-6)
    assert risk.shape == (60,) and risk.std() > 0
    lam = ExperimentOptions(**FAST, strategies=("early",), encoder_factories={"wsi": lambda d: MLPEncoder(d, 16)})
    with pytest.raises(FusionConfigError, match="functools.partial"):
        fit_deployed(data, [early], lam)


def test_a_tuned_strategy_is_deployed_with_the_options_its_cv_used(deployed_binary, tmp_path):
    """bilinear declares option overrides (2 PCs and embed_dim 2 per modality) and a weight-decay grid tuned by
    inner CV (fusion.tuning): the deployed refit uses both, as the engine's cross-validation did."""
    full, train, _, _, _ = deployed_binary
    opts = ExperimentOptions(**FAST, strategies=("bilinear",))
    row = run_neural(train, kfold_splits(train, k=3), opts, "bilinear", ["a", "b"], None)
    dm = fit_deployed(train, [row], opts)
    assert dm.strategy == "bilinear" and dm.info["tuning"]["options"]["weight_decay"] in (0.1, 1.0)
    assert dm.info["options"]["embed_dim"] == dm.info["architecture"]["embed_dim"] == 2
    assert dm.info["options"]["n_components"] == 2 and dm.info["architecture"]["in_dims"] == {"a": 2, "b": 2}
    back = load_deployed(save_deployed(dm, tmp_path / "models" / "diagnosis").parents[1], "diagnosis")
    new = full.patients[150:]
    ds = back.dataset({m: {p: full.features[m].loc[p].to_numpy() for p in new} for m in ("a", "b")})
    np.testing.assert_allclose(back.predict(ds), dm.predict(ds), atol=1e-6)
    assert roc_auc_score(full.target.loc[new, "label"], back.predict(ds)[:, 1]) > 0.85
