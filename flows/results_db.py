"""The results DB (DuckDB): targets, compounds, target-compound links, experiments and runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from fusion.errors import FusionRxError

DB_NAME = "results.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, cohort VARCHAR, started_utc VARCHAR, finished_utc VARCHAR,
    catalog VARCHAR, config_json VARCHAR, inputs_sha256_json VARCHAR, metrics_json VARCHAR,
    skipped_json VARCHAR);
CREATE TABLE IF NOT EXISTS targets (
    run_id VARCHAR, cohort VARCHAR, gene VARCHAR, rank INTEGER, score DOUBLE, evidence_json VARCHAR);
CREATE TABLE IF NOT EXISTS compounds (
    compound_id VARCHAR PRIMARY KEY, name VARCHAR, canonical_smiles VARCHAR, inchikey VARCHAR,
    properties_json VARCHAR);
CREATE TABLE IF NOT EXISTS target_compound_links (
    run_id VARCHAR, gene VARCHAR, compound_id VARCHAR, pchembl DOUBLE, activity_type VARCHAR,
    source VARCHAR);
CREATE TABLE IF NOT EXISTS experiments (
    run_id VARCHAR, name VARCHAR, kind VARCHAR, strategy VARCHAR, modalities VARCHAR, task VARCHAR,
    metric VARCHAR, mean DOUBLE, std DOUBLE, n_folds INTEGER);
"""


def db_path(store: str | Path) -> Path:
    """Location of the results DB inside a store."""
    return Path(store) / DB_NAME


def connect(store: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the results DB of a store (created with its schema when writing)."""
    path = db_path(store)
    if read_only:
        if not path.exists():
            raise FusionRxError(f"{path}: no results DB; run `fusionrx run` on this store first")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    return con


def write_run(store: str | Path, *, run: dict[str, Any], targets: pd.DataFrame, compounds: pd.DataFrame,
              links: pd.DataFrame, experiments: pd.DataFrame) -> None:
    """Write one run's results all or nothing: into a copy of the DB that replaces it by a rename, so a
    run killed during the write leaves the previous DB intact."""
    from flows.store import atomic_path

    final = db_path(store)
    with atomic_path(final) as tmp:
        tmp.unlink()
        if final.exists():
            shutil.copyfile(final, tmp)
        con = duckdb.connect(str(tmp))
        con.execute(SCHEMA)
        _insert_run(con, run=run, targets=targets, compounds=compounds, links=links, experiments=experiments)


def _insert_run(con: duckdb.DuckDBPyConnection, *, run: dict[str, Any], targets: pd.DataFrame,
                compounds: pd.DataFrame, links: pd.DataFrame, experiments: pd.DataFrame) -> None:
    """Insert (or replace) one run's rows in a single transaction, then close the connection."""
    try:
        con.execute("BEGIN TRANSACTION")
        run_id = run["run_id"]
        for table in ("targets", "target_compound_links", "experiments"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            run_id, run["cohort"], run["started_utc"], run["finished_utc"], run["catalog"],
            json.dumps(run["config"], sort_keys=True, default=str),
            json.dumps(run["inputs_sha256"], sort_keys=True),
            json.dumps(run["metrics"], sort_keys=True, default=float),
            json.dumps(run.get("skipped", []))])
        evidence_cols = [c for c in targets.columns if c.endswith("_score") or c.endswith("_value")]
        t = pd.DataFrame({
            "run_id": run_id, "cohort": run["cohort"], "gene": targets["gene"],
            "rank": targets["rank"].astype(int), "score": targets["score"].astype(float),
            "evidence_json": [json.dumps({c: (None if pd.isna(r[c]) else float(r[c])) for c in evidence_cols})
                              for _, r in targets.iterrows()]})
        con.register("t_df", t)
        con.execute("INSERT INTO targets SELECT * FROM t_df")
        if not compounds.empty:
            c = compounds[["compound_id", "name", "canonical_smiles", "inchikey", "properties_json"]]
            con.register("c_df", c)
            con.execute("DELETE FROM compounds WHERE compound_id IN (SELECT compound_id FROM c_df)")
            con.execute("INSERT INTO compounds SELECT * FROM c_df")
        if not links.empty:
            lk = links.assign(run_id=run_id)[["run_id", "gene", "compound_id", "pchembl", "activity_type", "source"]]
            con.register("l_df", lk)
            con.execute("INSERT INTO target_compound_links SELECT * FROM l_df")
        ex = experiments.assign(run_id=run_id)[["run_id", "name", "kind", "strategy", "modalities", "task",
                                                "metric", "mean", "std", "n_folds"]]
        con.register("e_df", ex)
        con.execute("INSERT INTO experiments SELECT * FROM e_df")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str:
    """The run id of the most recently finished run."""
    row = con.execute("SELECT run_id FROM runs ORDER BY finished_utc DESC LIMIT 1").fetchone()
    if row is None:
        raise FusionRxError("results DB has no finished run")
    return row[0]


def query_targets(store: str | Path, top: int = 10, run_id: str | None = None) -> list[dict[str, Any]]:
    """Top-N targets of a run (latest by default) with evidence scores and linked compounds."""
    con = connect(store, read_only=True)
    try:
        run_id = run_id or latest_run_id(con)
        rows = con.execute("SELECT gene, rank, score, evidence_json, cohort FROM targets WHERE run_id = ? "
                           "ORDER BY rank LIMIT ?", [run_id, int(top)]).fetchall()
        links = con.execute(
            "SELECT l.gene, l.compound_id, c.name, c.canonical_smiles, l.pchembl, l.activity_type "
            "FROM target_compound_links l JOIN compounds c USING (compound_id) WHERE l.run_id = ? "
            "ORDER BY l.gene, l.pchembl DESC", [run_id]).fetchall()
    finally:
        con.close()
    by_gene: dict[str, list[dict[str, Any]]] = {}
    for gene, cid, name, smi, pchembl, atype in links:
        by_gene.setdefault(gene, []).append({"id": cid, "name": name, "canonical_smiles": smi,
                                             "pchembl": pchembl, "activity_type": atype})
    out = []
    for gene, rank, score, ev, cohort in rows:
        evidence = json.loads(ev)
        out.append({"gene": gene, "rank": int(rank), "score": float(score), "cohort": cohort, "run_id": run_id,
                    "evidence": {k[:-6]: v for k, v in evidence.items() if k.endswith("_score")},
                    "evidence_values": {k[:-6]: v for k, v in evidence.items() if k.endswith("_value")},
                    "compounds": by_gene.get(gene, [])})
    return out


def query_experiments(store: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per fusion strategy and single modality: the CV metric mean and std of a run."""
    con = connect(store, read_only=True)
    try:
        run_id = run_id or latest_run_id(con)
        df = con.execute("SELECT name, kind, strategy, modalities, task, metric, mean, std, n_folds "
                         "FROM experiments WHERE run_id = ? ORDER BY task, kind, mean DESC", [run_id]).df()
    finally:
        con.close()
    df["run_id"] = run_id
    return df.to_dict("records")
