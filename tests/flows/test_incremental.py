"""Incremental runs: a rerun with nothing new does no ingest or encoding work; a new patient's imaging is
processed alone, and only the cohort models whose inputs changed are refitted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from tests.conftest import rescan_catalog

from flows.console import RunConsole
from flows.pipeline import open_run, run_pipeline, same_as_last_run

# per-run bookkeeping that every run writes; everything else in the store is an artifact
RUN_FILES = ("runs/", "results.duckdb", "manifest.parquet", "input_hashes.parquet", ".run.lock",
             "targets/ranking.parquet", "targets/evidence_rows.parquet")


def artifact_mtimes(store: Path) -> dict[str, int]:
    """mtime (ns) of every artifact file of a store, by relative path."""
    out = {}
    for f in store.rglob("*"):
        rel = str(f.relative_to(store))
        if f.is_file() and not rel.startswith(RUN_FILES):
            out[rel] = f.stat().st_mtime_ns
    return out


def counts(summary: dict) -> dict[str, dict[str, int]]:
    return {r["stage"]: {k: r[k] for k in ("new", "changed", "reused", "failed")} for r in summary["counts"]}


def test_rerun_with_nothing_new_does_no_ingest_or_encoding_work(tiny_run, tiny_cohort, tiny_config):
    store = tiny_run["store"]
    first = counts(tiny_run["summary"])
    assert first["radiology"] == {"new": 11, "changed": 0, "reused": 0, "failed": 0}
    before = artifact_mtimes(store)
    assert any(k.startswith("wsi/") for k in before) and any(k.startswith("imaging/radiology/") for k in before)
    summary = run_pipeline(tiny_cohort["catalog"], store, config_path=tiny_config, verbosity="quiet")
    c = counts(summary)
    assert "tile-encoder" not in first  # the shipped frozen tile CNN: nothing is trained on the cohort
    for stage in ("radiology", "volume-encoders", "pathology", "omics", "spatial", "spatial-encoder", "fusion",
                  "ranking"):
        assert c[stage]["new"] == c[stage]["changed"] == c[stage]["failed"] == 0, (stage, c[stage])
        assert c[stage]["reused"] == sum(first[stage].values()), (stage, c[stage])
    assert summary["input_files_hashed"] == 0  # size+mtime cache: no input byte was read again
    assert artifact_mtimes(store) == before  # not one artifact rewritten
    pd.testing.assert_frame_equal(pd.read_parquet(store / "targets" / "ranking.parquet"), tiny_run["ranking"])
    # the next run with these inputs, config and code is known to be a rerun: its reader workers are only
    # named, not started; another config is not
    assert same_as_last_run(open_run(str(tiny_cohort["catalog"]), str(store), str(tiny_config), RunConsole("quiet")))
    assert not same_as_last_run(open_run(str(tiny_cohort["catalog"]), str(store), None, RunConsole("quiet")))


def test_one_new_patient_is_processed_alone(tiny_run, tiny_cohort, tiny_config, tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    shutil.copytree(tiny_cohort["data"], data)
    shutil.copytree(tiny_run["store"], store)
    before = artifact_mtimes(store)
    for rel in tiny_cohort["files"]:  # the held-out patient's CT, PET, slide and spatial sample arrive
        shutil.copytree(tiny_cohort["held_out"] / rel, data / rel) if (tiny_cohort["held_out"] / rel).is_dir() \
            else shutil.copy2(tiny_cohort["held_out"] / rel, data / rel)
    rescan_catalog(data)  # new files arrive: the catalog is rewritten from the folder, as `fusionrx scan --out` does
    summary = run_pipeline(data / "data_catalog.yaml", store, config_path=tiny_config, verbosity="quiet")
    c = counts(summary)
    pid = tiny_cohort["patient"]
    assert c["radiology"] == {"new": 1, "changed": 0, "reused": 11, "failed": 0}
    assert c["pathology"]["new"] == 1 and c["pathology"]["changed"] == 0
    assert c["spatial"]["new"] == 1 and c["spatial"]["changed"] == 0
    assert c["omics"]["reused"] == 1 and "tile-encoder" not in c  # unchanged inputs / shipped frozen encoder
    for model in ("volume-encoders", "spatial-encoder", "fusion", "ranking"):  # cohort models whose inputs changed
        assert c[model]["changed"] == 1, (model, c[model])
    after = artifact_mtimes(store)
    new_files = sorted(set(after) - set(before))
    # per-patient artifacts are the new patient's; the rest are the cohort-level outputs of the rerun fusion
    # stage (embeddings, its experiment specs' reports, MLflow runs and metrics)
    cohort_level = ("embeddings/", "metrics/", "experiments/", "reports/", "mlruns/")
    assert new_files and all(pid in f for f in new_files if not f.startswith(cohort_level))
    per_patient = [f for f in before if f.startswith(("imaging/radiology/", "wsi/", "spatial/"))
                   and f not in ("wsi/tile_encoder.pt", "spatial/embedding.parquet")]
    assert per_patient and all(after[f] == before[f] for f in per_patient)  # old patients untouched
    ranking = pd.read_parquet(store / "targets" / "ranking.parquet")
    assert set(ranking["gene"]) == set(tiny_run["ranking"]["gene"])
