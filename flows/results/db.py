"""The results DB (DuckDB): targets, compounds, target-compound links, experiments and runs."""

from __future__ import annotations

import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pandas as pd

from flows.results.ranking import EVIDENCE_TYPES
from fusion.errors import FusionRxError

DB_NAME = "results.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, cohort VARCHAR, started_utc VARCHAR, finished_utc VARCHAR,
    catalog VARCHAR, config_json VARCHAR, inputs_sha256_json VARCHAR, metrics_json VARCHAR,
    skipped_json VARCHAR);
CREATE TABLE IF NOT EXISTS targets (
    run_id VARCHAR, cohort VARCHAR, gene VARCHAR, rank INTEGER, score DOUBLE, evidence_json VARCHAR,
    rna_expression DOUBLE, copy_number DOUBLE, survival_association DOUBLE, spatial_tumour_region DOUBLE,
    somatic_mutation DOUBLE, model_attribution DOUBLE, tractability DOUBLE, best_pchembl DOUBLE,
    n_active_compounds INTEGER, scoring_version VARCHAR);
CREATE TABLE IF NOT EXISTS evidence (
    run_id VARCHAR, gene VARCHAR, evidence_type VARCHAR, source VARCHAR, statistic VARCHAR,
    raw_value DOUBLE, score DOUBLE, row_ref VARCHAR, details_json VARCHAR);
CREATE TABLE IF NOT EXISTS scoring (run_id VARCHAR PRIMARY KEY, version VARCHAR, config_json VARCHAR);
CREATE TABLE IF NOT EXISTS compounds (
    compound_id VARCHAR PRIMARY KEY, name VARCHAR, canonical_smiles VARCHAR, inchikey VARCHAR,
    properties_json VARCHAR, morgan_fp BLOB);
CREATE TABLE IF NOT EXISTS target_compound_links (
    run_id VARCHAR, gene VARCHAR, compound_id VARCHAR, pchembl DOUBLE, activity_type VARCHAR,
    source VARCHAR, link_type VARCHAR, model_version VARCHAR);
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS pchembl_lower DOUBLE;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS pchembl_upper DOUBLE;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS interval_nominal DOUBLE;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS nn_tanimoto_target DOUBLE;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS nn_tanimoto_any DOUBLE;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS in_domain BOOLEAN;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS target_hgnc_id VARCHAR;
ALTER TABLE target_compound_links ADD COLUMN IF NOT EXISTS target_ensembl_id VARCHAR;
CREATE TABLE IF NOT EXISTS activity_models (run_id VARCHAR, model_version VARCHAR, card_json VARCHAR);
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


# Every read-only connection this module and flows.results.queries open is opened and closed under this lock,
# one at a time per process. DuckDB hands a new connect(path) the database instance of a connection still open
# in the process: opened after a run swapped the DB file (write_run), it would read the replaced file. With no
# other connection open, a new one opens the file now at the path. The API answers from per-file-state
# snapshots (flows.results.queries), so it reads the DB once per state, not once per request.
_READ_LOCK = threading.RLock()


@contextmanager
def reading(store: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the store's results DB, the only one open in the process while the block runs
    (others wait); closed on exit. Raises FusionRxError when there is no results DB."""
    with _READ_LOCK:
        con = connect(store, read_only=True)
        try:
            yield con
        finally:
            con.close()


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, ROLLBACK on any error; the connection is closed either way."""
    try:
        con.execute("BEGIN TRANSACTION")
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def write_run(store: str | Path, *, run: dict[str, Any], targets: pd.DataFrame, compounds: pd.DataFrame,
              links: pd.DataFrame, experiments: pd.DataFrame, evidence: pd.DataFrame | None = None,
              scoring: dict[str, Any] | None = None, model_cards: list[dict[str, Any]] | None = None) -> None:
    """Write one run's results all or nothing: into a copy of the DB that replaces it by a rename, so a
    run killed during the write leaves the previous DB intact.

    ``targets``: gene, rank, score, one column per evidence type, tractability (flows.stages.evidence);
    ``evidence``: the rows behind the scores; ``links``: target_gene/gene, compound_id, pchembl,
    activity_type, source, link_type (measured | predicted), model_version and, for predicted links, the
    interval (pchembl_lower / _upper at interval_nominal) and applicability domain (nn_tanimoto_target,
    nn_tanimoto_any, in_domain); target_hgnc_id / target_ensembl_id where the library gives them.
    ``model_cards``: the cards of the activity models behind predicted links (molecules.model_card).
    """
    from flows.store.artifacts import atomic_path

    final = db_path(store)
    with atomic_path(final) as tmp:
        tmp.unlink()
        if final.exists():
            shutil.copyfile(final, tmp)
        con = duckdb.connect(str(tmp))
        con.execute(SCHEMA)
        _insert_run(con, run=run, targets=targets, compounds=compounds, links=links, experiments=experiments,
                    evidence=evidence, scoring=scoring, model_cards=model_cards or [])


def _insert_run(con: duckdb.DuckDBPyConnection, *, run: dict[str, Any], targets: pd.DataFrame,
                compounds: pd.DataFrame, links: pd.DataFrame, experiments: pd.DataFrame,
                evidence: pd.DataFrame | None, scoring: dict[str, Any] | None,
                model_cards: list[dict[str, Any]] = ()) -> None:
    """Insert (or replace) one run's rows in a single transaction, then close the connection."""
    with _transaction(con):
        run_id = run["run_id"]
        for table in ("targets", "target_compound_links", "experiments", "evidence", "scoring", "activity_models"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            run_id, run["cohort"], run["started_utc"], run["finished_utc"], run["catalog"],
            json.dumps(run["config"], sort_keys=True, default=str),
            json.dumps(run["inputs_sha256"], sort_keys=True),
            json.dumps(run["metrics"], sort_keys=True, default=float),
            json.dumps(run.get("skipped", []))])
        _insert_targets(con, run, targets, links, (scoring or {}).get("active_pchembl", 6.0),
                        (scoring or {}).get("version", ""))
        if evidence is not None and not evidence.empty:
            ev = evidence.assign(run_id=run_id)[["run_id", "gene", "evidence_type", "source", "statistic",
                                                 "raw_value", "score", "row_ref", "details_json"]]
            con.register("ev_df", ev)
            con.execute("INSERT INTO evidence SELECT * FROM ev_df")
        if scoring is not None:
            con.execute("INSERT INTO scoring VALUES (?, ?, ?)",
                        [run_id, scoring.get("version", ""), json.dumps(scoring, sort_keys=True, default=str)])
        if not compounds.empty:
            c = compounds.assign(morgan_fp=compounds["morgan_fp"] if "morgan_fp" in compounds.columns else None)
            c = c[["compound_id", "name", "canonical_smiles", "inchikey", "properties_json", "morgan_fp"]]
            con.register("c_df", c)
            con.execute("DELETE FROM compounds WHERE compound_id IN (SELECT compound_id FROM c_df)")
            con.execute("INSERT INTO compounds SELECT * FROM c_df")
        if not links.empty:
            lk = _link_frame(links).assign(run_id=run_id)[list(LINK_DB_COLUMNS)]
            con.register("l_df", lk)
            con.execute("INSERT INTO target_compound_links BY NAME SELECT * FROM l_df")
        for card in model_cards:
            con.execute("INSERT INTO activity_models VALUES (?, ?, ?)",
                        [run_id, str(card["model_version"]), json.dumps(card, sort_keys=True, default=float)])
        ex = experiments.assign(run_id=run_id)[["run_id", "name", "kind", "strategy", "modalities", "task",
                                                "metric", "mean", "std", "n_folds"]]
        con.register("e_df", ex)
        con.execute("INSERT INTO experiments SELECT * FROM e_df")


TYPE_COLUMNS = EVIDENCE_TYPES  # one DOUBLE column each in `targets` (stable names, see SCHEMA)
LINK_DB_COLUMNS = ("run_id", "gene", "compound_id", "pchembl", "activity_type", "source", "link_type",
                   "model_version", "pchembl_lower", "pchembl_upper", "interval_nominal", "nn_tanimoto_target",
                   "nn_tanimoto_any", "in_domain", "target_hgnc_id", "target_ensembl_id")
_LINK_DOUBLES = ("pchembl_lower", "pchembl_upper", "interval_nominal", "nn_tanimoto_target", "nn_tanimoto_any")


def _link_frame(links: pd.DataFrame) -> pd.DataFrame:
    """Links with the DB's column names (gene; link_type 'measured' and empty model_version by default)."""
    lk = links.rename(columns={"target_gene": "gene"})
    if "link_type" not in lk.columns:
        lk = lk.assign(link_type="measured")
    if "model_version" not in lk.columns:
        lk = lk.assign(model_version="")
    for col in LINK_DB_COLUMNS[1:]:
        if col not in lk.columns:  # measured links have no interval / domain; libraries may lack target ids
            lk = lk.assign(**{col: pd.Series(None, index=lk.index, dtype=_link_dtype(col))})
    return lk.astype({c: "float64" for c in _LINK_DOUBLES}).astype({"in_domain": "boolean"})


def _link_dtype(col: str) -> str:
    return "float64" if col in _LINK_DOUBLES else ("boolean" if col == "in_domain" else "object")


def _insert_targets(con: duckdb.DuckDBPyConnection, run: dict[str, Any], targets: pd.DataFrame,
                    links: pd.DataFrame, active_pchembl: float, scoring_version: str) -> None:
    """Targets with one column per evidence type, tractability and their linked-compound summary."""
    lk = _link_frame(links) if not links.empty else pd.DataFrame(columns=["gene", "compound_id", "pchembl"])
    best = lk.groupby("gene")["pchembl"].max()
    n_active = lk.loc[lk["pchembl"] >= active_pchembl].groupby("gene")["compound_id"].nunique()
    genes = targets["gene"]
    t = pd.DataFrame({"run_id": run["run_id"], "cohort": run["cohort"], "gene": genes,
                      "rank": targets["rank"].astype(int), "score": targets["score"].astype(float)})
    cols = [c for c in TYPE_COLUMNS if c in targets.columns]
    t["evidence_json"] = [json.dumps(dict(zip(cols, map(float, r)))) for r in targets[cols].to_numpy()]
    for c in (*TYPE_COLUMNS, "tractability"):
        t[c] = targets[c].astype(float).to_numpy() if c in targets.columns else 0.0
    t["best_pchembl"] = best.reindex(genes).to_numpy(dtype=float)
    t["n_active_compounds"] = n_active.reindex(genes).fillna(0).astype(int).to_numpy()
    t["scoring_version"] = scoring_version
    con.register("t_df", t)
    con.execute("INSERT INTO targets SELECT * FROM t_df")


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str:
    """The run id of the most recently finished run."""
    row = con.execute("SELECT run_id FROM runs ORDER BY finished_utc DESC LIMIT 1").fetchone()
    if row is None:
        raise FusionRxError("results DB has no finished run")
    return row[0]


def query_experiments(store: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per fusion strategy and single modality: the CV metric mean and std of a run (latest by default)."""
    with reading(store) as con:
        return experiment_rows(con, run_id or latest_run_id(con))


def experiment_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """A run's experiment rows (name, kind, strategy, modalities, task, metric, mean, std, n_folds, run_id),
    by task, kind and mean (highest first)."""
    df = con.execute("SELECT name, kind, strategy, modalities, task, metric, mean, std, n_folds "
                     "FROM experiments WHERE run_id = ? ORDER BY task, kind, mean DESC", [run_id]).df()
    df["run_id"] = run_id
    return df.to_dict("records")


# ---------------------------------------------------------------- experiment runs (`fusionrx experiment`)
EXPERIMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment_runs (
    run_id VARCHAR PRIMARY KEY, name VARCHAR, task VARCHAR, started_utc VARCHAR, finished_utc VARCHAR,
    spec_path VARCHAR, spec_json VARCHAR, data_sha256_json VARCHAR, code_version VARCHAR, n_patients INTEGER,
    n_folds INTEGER, tracking_uri VARCHAR, report_path VARCHAR);
CREATE TABLE IF NOT EXISTS experiment_results (
    run_id VARCHAR, model VARCHAR, strategy VARCHAR, modalities_json VARCHAR, head VARCHAR, metric VARCHAR,
    mean DOUBLE, std DOUBLE, folds_json VARCHAR, details_json VARCHAR);
"""


def write_experiment_run(store: str | Path, run: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Record one `fusionrx experiment` run (spec, data hashes, code version) and its model rows, atomically."""
    con = connect(store)
    con.execute(EXPERIMENT_SCHEMA)
    with _transaction(con):
        con.execute("DELETE FROM experiment_results WHERE run_id = ?", [run["run_id"]])
        con.execute("DELETE FROM experiment_runs WHERE run_id = ?", [run["run_id"]])
        con.execute("INSERT INTO experiment_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            run["run_id"], run["name"], run["task"], run["started_utc"], run["finished_utc"], run["spec_path"],
            json.dumps(run["spec"], sort_keys=True, default=str), json.dumps(run["data_sha256"], sort_keys=True),
            run["code_version"], int(run["n_patients"]), int(run["n_folds"]), run.get("tracking_uri"),
            run.get("report_path")])
        keys = {"name", "strategy", "modalities", "head", "metric", "mean", "std", "folds"}
        for r in rows:
            con.execute("INSERT INTO experiment_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                run["run_id"], r["name"], r["strategy"], json.dumps(r["modalities"]), r.get("head"), r["metric"],
                r["mean"], r.get("std"), json.dumps(r.get("folds", [])),
                json.dumps({k: v for k, v in r.items() if k not in keys}, default=float)])


def query_experiment_results(store: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Model rows of an experiment run (latest by default), with the run's name and spec path."""
    with reading(store) as con:
        if run_id is None:
            row = con.execute("SELECT run_id FROM experiment_runs ORDER BY finished_utc DESC LIMIT 1").fetchone()
            if row is None:
                raise FusionRxError(f"{db_path(store)}: no experiment run recorded")
            run_id = row[0]
        df = con.execute("SELECT r.run_id, e.name AS experiment, r.model, r.strategy, r.modalities_json, r.head, "
                         "r.metric, r.mean, r.std, r.folds_json FROM experiment_results r JOIN experiment_runs e "
                         "USING (run_id) WHERE run_id = ?", [run_id]).df()
    df["modalities"] = df.pop("modalities_json").map(json.loads)
    df["folds"] = df.pop("folds_json").map(json.loads)
    return df.to_dict("records")
