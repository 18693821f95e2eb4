"""The DuckDB SQL peer of bench/targets_bench.py ranks like ranked_targets: same top-N genes in order and the
same scores, on a small generated results DB, for uniform, skewed and one-type weights."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from bench.targets_bench import SQL_LIST, SQL_WINDOW, build_store, duckdb_ranking
from flows.results.db import db_path
from flows.results.queries import ranked_targets
from flows.results.ranking import EVIDENCE_TYPES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets_peer")
    build_store(root, n_genes=400, n_compounds=20, seed=0)
    return root


@pytest.mark.parametrize("sql", [SQL_LIST, SQL_WINDOW], ids=["list", "window"])
def test_duckdb_sql_gives_the_same_top_n(store, sql):
    weight_sets = [dict.fromkeys(EVIDENCE_TYPES, 1.0),
                   dict(zip(EVIDENCE_TYPES, np.linspace(1.0, 0.1, len(EVIDENCE_TYPES)))),
                   {EVIDENCE_TYPES[0]: 1.0}]
    con = duckdb.connect(str(db_path(store)), read_only=True)
    try:
        for w in weight_sets:
            ours = ranked_targets(store, top=25, weights=w, compounds_per_target=0)
            peer = duckdb_ranking(con, sql, ours["run_id"], w, 25)
            assert [r["gene"] for r in ours["rows"]] == [g for g, _ in peer]
            np.testing.assert_allclose([r["score"] for r in ours["rows"]], [v for _, v in peer], rtol=0, atol=1e-12)
    finally:
        con.close()
    # one type weighted: the score is that type's score itself (w s / 1^2 / w)
    top = ranked_targets(store, top=1, weights={EVIDENCE_TYPES[0]: 1.0})["rows"][0]
    assert top["score"] == pytest.approx(top["evidence"][EVIDENCE_TYPES[0]])
