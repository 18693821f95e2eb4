"""The fusion experiments split over worker processes give the sequential run's table, row for row."""

from __future__ import annotations

import pandas as pd

from flows.config import RunConfig
from flows.stages.fusion_experiments import run_fusion_experiments
from flows.stages.fusion_parallel import fusion_jobs, run_fusion_experiments_parallel
from flows.store import load_pickle


def test_parallel_fusion_equals_sequential(tiny_run):
    store = tiny_run["store"]
    frames = {p.stem: pd.read_parquet(p) for p in sorted((store / "embeddings").glob("*.parquet"))}
    clinical = load_pickle(store / "omics" / "bulk_omics.pkl").clinical
    labels = clinical["primary_diagnosis"].dropna()
    survival = clinical[["os_time_days", "os_event"]].dropna()
    cfg = {**RunConfig().to_dict(), "fusion_epochs": 3, "cv_splits": 2, "cv_repeats": 1,
           "strategies": ["early", "late"], "single_modalities": ["expression", "ct"]}
    assert len(fusion_jobs(cfg, True)) == 2 * 4 + 1
    seq = run_fusion_experiments(frames, {}, labels, cfg, survival=survival)
    par = run_fusion_experiments_parallel(frames, {}, labels, cfg, survival=survival, workers=2)
    assert len(seq["experiments"]) == 8
    pd.testing.assert_frame_equal(par["experiments"], seq["experiments"])
    assert par["modality_counts"] == seq["modality_counts"] and par["n_patients"] == seq["n_patients"]
    assert sorted(par["oof"]) == sorted(seq["oof"])
