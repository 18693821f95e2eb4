"""Scale-out: the pipeline's per-patient tasks on a Dask cluster of 2 worker processes (through
prefect-dask, addressed like a remote cluster) rank the same targets as the local thread runner."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.pipeline import run_pipeline
from flows.store.artifacts import ArtifactStore
from tests.flows.rankings import assert_same_ranking

pytestmark = pytest.mark.slow  # a second pipeline run on a Dask cluster

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_cluster():
    """A local Dask cluster of 2 single-thread worker processes (small memory), reached by its address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1.5GiB",
                                  dashboard_address=None) as cluster:
        yield cluster


def test_dask_run_ranks_the_same_targets_as_the_local_run(tiny_run, tiny_cohort, tiny_config, dask_cluster,
                                                          tmp_path):
    store = tmp_path / "store"
    summary = run_pipeline(tiny_cohort["catalog"], store, config_path=tiny_config, verbosity="quiet",
                           runner="dask", dask_address=dask_cluster.scheduler_address)
    with distributed.Client(dask_cluster.scheduler_address) as client:
        logs = client.get_worker_logs()
    assert len(logs) == 2
    counts = {r["stage"]: r for r in summary["counts"]}
    assert counts["radiology"]["new"] == 11
    assert counts["radiology"]["failed"] == 0
    # every per-patient artifact the worker processes built was recorded in the one manifest (file lock)
    manifest = ArtifactStore(store).manifest()
    assert set(manifest[manifest["stage"] == "ingest-radiology"]["artifact"]) == set(
        ArtifactStore(tiny_run["store"]).manifest().query("stage == 'ingest-radiology'")["artifact"])
    # same targets in the same order; scores to 1e-3 (worker processes train torch with other thread counts)
    assert_same_ranking(pd.read_parquet(store / "targets" / "ranking.parquet"), tiny_run["ranking"], atol=1e-3)
