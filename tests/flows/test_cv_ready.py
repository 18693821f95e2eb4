"""The fusion stage keeps a modality only where every CV training fold can have 2 patients with it: frames
and slide bags alike (a cohort that lost most of its slides to damage runs its experiments without them)."""

from types import SimpleNamespace

import pandas as pd

from flows.pipeline import cv_ready


def test_modalities_without_two_training_patients_per_fold_are_left_out():
    logged = []
    ctx = SimpleNamespace(config=SimpleNamespace(cv_splits=2), console=SimpleNamespace(log=logged.append))
    patients = pd.Index([f"P{i}" for i in range(12)])  # a 2-fold test fold holds up to 6
    frames = {"ct": pd.DataFrame({"x": range(12)}, index=patients),
              "pet": pd.DataFrame({"x": range(7)}, index=patients[:7]),     # 7 < 6 + 2: out
              "spatial": pd.DataFrame({"x": range(8)}, index=patients[:8])}  # 8: kept
    assert set(cv_ready(ctx, frames, patients)) == {"ct", "spatial"}
    slides = {f"P{i}": f"/store/wsi/P{i}.h5" for i in range(6)}  # 6 slides left of 12 patients
    assert cv_ready(ctx, {"wsi": slides}, patients) == {}
    assert any("'wsi' left out: 6 labelled patients" in m for m in logged)
    more = {f"P{i}": f"/store/wsi/P{i}.h5" for i in range(9)}
    assert cv_ready(ctx, {"wsi": more}, patients) == {"wsi": more}
