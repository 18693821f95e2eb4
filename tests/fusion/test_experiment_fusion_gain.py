"""The experiment engine on planted multimodal data (3 flat modalities + 1 slide-like bag, 25% missing
each): every fusion strategy beats the best single modality, folds are shared, every patient is scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.experiment import ExperimentData, ExperimentOptions, run_experiment
from tests.fusion.experiment_tables import kfold_splits
from tests.fusion.planted import LAYOUT, make_planted

FUSION = ("early", "late", "attention", "kronecker")


def planted_experiment(n: int = 100, seed: int = 0) -> ExperimentData:
    """make_planted's dataset as ExperimentData: absent flat rows NaN, bags hold only their valid instances."""
    ds, truth = make_planted(n=n, seed=seed)
    features, bags = {}, {}
    for m, mod in ds.modalities.items():
        present = mod.present.numpy()
        if mod.is_bag:
            mask = mod.instance_mask.numpy()
            bags[m] = {p: mod.values[i][mask[i]].numpy() for i, p in enumerate(ds.patients) if present[i]}
        else:
            x = mod.values.numpy().astype(np.float64)
            x[~present] = np.nan
            features[m] = pd.DataFrame(x, index=ds.patients, columns=[f"{m}{j}" for j in range(x.shape[1])])
    target = pd.DataFrame({"label": truth["y"]}, index=ds.patients)
    return ExperimentData(patients=list(ds.patients), features=features, task="classification", target=target,
                          classes=["a", "b"], bags=bags)


@pytest.fixture(scope="module")
def results():
    data = planted_experiment()
    opts = ExperimentOptions(strategies=FUSION, epochs=40, n_components=None, robustness=False, lr=3e-3)
    return data, {r.name: r for r in run_experiment(data, kfold_splits(data, k=4), opts, workers=2)}


def test_every_fusion_strategy_beats_the_best_single_modality(results):
    _, res = results
    single = {n: r.mean for n, r in res.items() if r.strategy == "single"}
    fused = {r.strategy: r.mean for r in res.values() if r.strategy in FUSION}
    assert set(single) == {f"single:{m}" for m in LAYOUT} and set(fused) == set(FUSION)
    best_single = max(single.values())
    assert min(fused.values()) > best_single, (fused, single)  # every strategy gains from the other views
    assert sum(fused.values()) / len(fused) >= best_single + 0.05, (fused, single)
    assert min(fused.values()) > 0.75
    # on the ~75% of patients that have its modality, each single model scores above its all-patient mean
    for n in single:
        present = np.mean([m["auc_present"] for m in res[n].fold_metrics])
        assert present > res[n].mean, (n, present, res[n].mean)


def test_folds_are_shared_and_every_patient_is_scored_once(results):
    data, res = results
    for r in res.values():
        assert sorted(r.oof["patient"]) == sorted(data.patients), r.name
        assert r.oof["prediction"].between(0, 1).all()
    folds = {r.name: tuple(r.oof.groupby("fold")["patient"].apply(frozenset)) for r in res.values()}
    assert len(set(folds.values())) == 1
