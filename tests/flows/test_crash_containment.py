"""A native crash inside one patient's reader fails that file, named in the run summary, and the run goes
on: a whole pipeline run over four Space Ranger samples, one of whose matrices has index values far outside
the matrix (issue 18's damage), read by scanpy without omics.spaceranger's index check: a real segfault,
in the worker process that flows.stages.spatial reads each sample in."""

from __future__ import annotations

import shutil

import h5py
import pytest

from tests.realdata import realdata_dir

PIDS = [f"TCGA-FX-{i:04d}" for i in range(1, 5)]
BAD = PIDS[1]


def read_spatial_unchecked(path):
    """omics.spatial.read_spatial as it was before the index check: runs in the worker process only (the
    patch dies with it), so the damaged matrix reaches scanpy.read_10x_h5 and its native code."""
    import omics.spaceranger as sr
    from omics.spatial import read_spatial

    sr.check_sparse_matrix = lambda p: None
    return read_spatial(path)


@pytest.fixture()
def crash_cohort(tmp_path):
    """Four copies of the real Visium v1 folder as four patients, the second one's indices overwritten."""
    src = realdata_dir("spatial", "visium_v1_subsample")
    for pid in PIDS:
        shutil.copytree(src, tmp_path / "spatial" / pid / "outs")
    with h5py.File(tmp_path / "spatial" / BAD / "outs" / "filtered_feature_bc_matrix.h5", "r+") as f:
        idx = f["matrix/indices"][()]
        idx[len(idx) // 3: len(idx) // 3 + 50] = 10**9
        f["matrix/indices"][...] = idx
    files = "".join(f"      {pid}:\n      - spatial/{pid}/outs\n" for pid in PIDS)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"version: 1\ncohort: crash\nroot: .\nsources:\n  spatial:\n    modality: spatial\n"
                       f"    format: visium\n    path: spatial\n    files:\n{files}")
    return catalog


def test_a_segfault_in_one_reader_fails_only_that_file(crash_cohort, tiny_config, prefect_harness, monkeypatch,
                                                       one_torch_thread):
    import flows.stages.spatial as stage
    from flows.pipeline import run_pipeline

    monkeypatch.setattr(stage, "read_spatial", read_spatial_unchecked)
    store = crash_cohort.parent / "store"
    summary = run_pipeline(crash_cohort, store, config_path=tiny_config, verbosity="quiet")

    bad = crash_cohort.parent / "spatial" / BAD / "outs"
    named = [s for s in summary["skipped"] if s["file"] == str(bad)]
    assert len(named) == 1, summary["skipped"]
    assert "SpatialError" in named[0]["error"] and "killed by signal SIGSEGV (11)" in named[0]["error"]
    assert str(bad) in named[0]["error"]
    assert len(summary["skipped"]) == 1  # nothing else failed
    for pid in PIDS:  # the run went on: the other three samples are processed and stored
        assert (store / "spatial" / pid).is_dir() == (pid != BAD), pid
