"""Queries of the results DB shared by the CLI and the HTTP API: ranked targets (custom weights, filters,
paging), one target's explanation (every evidence row behind its score), similar compounds.

Every function takes a store path, opens the results DB read-only and returns JSON-ready dicts; bad
input raises ``QueryError`` (or ``ScoringError`` for weights, ``MoleculeError`` for SMILES).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from flows.ranking import EVIDENCE_TYPES, rank_order, validate_weights, weighted_harmonic_sum
from flows.results_db import connect, latest_run_id
from fusion.errors import QueryError

MAX_PAGE = 1000          # rows per page at most
MAX_SIMILAR = 500        # hits per similarity query at most
COMPOUNDS_PER_TARGET = 5


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise QueryError(f"{name} must be an integer in [{lo}, {hi}], found {value!r}")
    return int(value)


def _run(con: duckdb.DuckDBPyConnection, run_id: str | None) -> str:
    if run_id is None:
        return latest_run_id(con)
    if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
        raise QueryError(f"run {run_id!r} is not in the results DB")
    return run_id


def run_scoring(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The scoring config (version, weights, transforms) a run's targets were ranked with."""
    row = con.execute("SELECT config_json FROM scoring WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise QueryError(f"run {run_id!r} has no scoring record (written by an older FusionRx); rerun it")
    return json.loads(row[0])


def _compounds(con: duckdb.DuckDBPyConnection, run_id: str, genes: list[str],
               per_gene: int) -> dict[str, list[dict[str, Any]]]:
    """Linked compounds of the genes, most potent first (at most ``per_gene`` each)."""
    if not genes or per_gene <= 0:
        return {}
    rows = con.execute(
        "SELECT l.gene, l.compound_id, c.name, c.canonical_smiles, l.pchembl, l.activity_type, l.link_type, "
        "l.model_version FROM (SELECT *, row_number() OVER (PARTITION BY gene ORDER BY pchembl DESC, compound_id) "
        "AS k FROM target_compound_links WHERE run_id = ? AND gene IN (SELECT unnest(?))) l "
        "JOIN compounds c USING (compound_id) WHERE l.k <= ? ORDER BY l.gene, l.pchembl DESC, l.compound_id",
        [run_id, genes, per_gene]).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for gene, cid, name, smi, pchembl, atype, link, version in rows:
        out.setdefault(gene, []).append({
            "id": cid, "name": name, "canonical_smiles": smi, "activity": {"type": atype, "pchembl": pchembl},
            "pchembl": pchembl, "link": link or "measured", "model_version": version or None})
    return out


def ranked_targets(store: str | Path, *, top: int = 10, offset: int = 0, weights: dict[str, float] | None = None,
                   min_score: float | None = None, has_compound: bool = False, run_id: str | None = None,
                   compounds_per_target: int = COMPOUNDS_PER_TARGET) -> dict[str, Any]:
    """A page of ranked targets; ``weights`` (evidence type -> weight) replaces the run's: types not named get 0.

    Ranks are over all genes under the weights; ``min_score`` and ``has_compound`` (a linked compound with
    pChEMBL >= the active threshold, measured or predicted) filter, ``offset``/``top`` page the result.
    Returns run_id, scoring_version, weights, total (genes passing the filters), offset, top and rows
    (gene, rank, score, evidence: type -> score, tractability, compounds).
    """
    top = _check_int("top", top, 1, MAX_PAGE)
    offset = _check_int("offset", offset, 0, 10**9)
    if min_score is not None and not (isinstance(min_score, (int, float)) and 0.0 <= float(min_score) <= 1.0):
        raise QueryError(f"min_score must be a number in [0, 1], found {min_score!r}")
    con = connect(store, read_only=True)
    try:
        run_id = _run(con, run_id)
        scoring = run_scoring(con, run_id)
        if weights is None:
            used = {t: float(scoring["weights"].get(t, 0.0)) for t in EVIDENCE_TYPES}
        else:
            given = validate_weights(dict(weights))
            used = {t: given.get(t, 0.0) for t in EVIDENCE_TYPES}
        cols = ", ".join(EVIDENCE_TYPES)
        res = con.execute(f"SELECT gene, {cols}, tractability, n_active_compounds FROM targets WHERE run_id = ?",
                          [run_id]).fetchnumpy()
        genes = np.asarray(res["gene"], dtype=str)
        matrix = np.column_stack([np.asarray(res[t], dtype=float) for t in EVIDENCE_TYPES])
        score = weighted_harmonic_sum(matrix, np.array([used[t] for t in EVIDENCE_TYPES]))
        order = rank_order(genes, score)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        keep = np.ones(len(genes), dtype=bool)
        if min_score is not None:
            keep &= score >= float(min_score)
        if has_compound:
            keep &= np.asarray(res["n_active_compounds"], dtype=float) > 0
        kept = order[keep[order]]
        page = kept[offset: offset + top]
        compounds = _compounds(con, run_id, genes[page].tolist(), compounds_per_target)
    finally:
        con.close()
    trac = np.asarray(res["tractability"], dtype=float)
    rows = [{"gene": str(genes[i]), "rank": int(rank[i]), "score": float(score[i]),
             "evidence": {t: float(matrix[i, k]) for k, t in enumerate(EVIDENCE_TYPES)},
             "tractability": float(trac[i]), "compounds": compounds.get(str(genes[i]), [])} for i in page]
    return {"run_id": run_id, "scoring_version": scoring.get("version"), "weights": used, "total": int(len(kept)),
            "offset": offset, "top": top, "rows": rows}


def _resolve_gene(con: duckdb.DuckDBPyConnection, run_id: str, gene: str) -> str:
    if not isinstance(gene, str) or not gene.strip():
        raise QueryError(f"gene must be a non-empty symbol, found {gene!r}")
    row = con.execute("SELECT gene FROM targets WHERE run_id = ? AND (gene = ? OR upper(gene) = upper(?)) "
                      "ORDER BY gene = ? DESC LIMIT 1", [run_id, gene.strip(), gene.strip(), gene.strip()]).fetchone()
    if row is None:
        raise QueryError(f"gene {gene!r} is not among the ranked genes of run {run_id}")
    return row[0]


def explain_target(store: str | Path, gene: str, *, run_id: str | None = None,
                   compounds_per_target: int = 50) -> dict[str, Any]:
    """One gene's rank and score, each evidence type's score, weight and contribution, and every evidence
    row behind it (source, statistic, raw value, score, row reference), tractability and compounds."""
    con = connect(store, read_only=True)
    try:
        run_id = _run(con, run_id)
        scoring = run_scoring(con, run_id)
        gene = _resolve_gene(con, run_id, gene)
        cols = ", ".join(EVIDENCE_TYPES)
        t = con.execute(f"SELECT rank, score, {cols}, tractability, best_pchembl, n_active_compounds, cohort, "
                        "scoring_version FROM targets WHERE run_id = ? AND gene = ?", [run_id, gene]).fetchone()
        ev = con.execute("SELECT evidence_type, source, statistic, raw_value, score, row_ref, details_json "
                         "FROM evidence WHERE run_id = ? AND gene = ? ORDER BY evidence_type, score DESC, source",
                         [run_id, gene]).fetchall()
        compounds = _compounds(con, run_id, [gene], compounds_per_target).get(gene, [])
    finally:
        con.close()
    rank, score = int(t[0]), float(t[1])
    type_scores = dict(zip(EVIDENCE_TYPES, map(float, t[2: 2 + len(EVIDENCE_TYPES)])))
    tractability, best, n_active, cohort, version = t[2 + len(EVIDENCE_TYPES):]
    weights = {k: float(scoring["weights"].get(k, 0.0)) for k in EVIDENCE_TYPES}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for etype, source, stat, raw, s, ref, details in ev:
        by_type.setdefault(etype, []).append({"source": source, "statistic": stat, "raw_value": raw, "score": s,
                                              "row_ref": ref, "details": json.loads(details)})
    evidence = [{"type": k, "score": type_scores[k], "weight": weights[k], "weighted": weights[k] * type_scores[k],
                 "n_rows": len(by_type.get(k, [])), "rows": by_type.get(k, [])} for k in EVIDENCE_TYPES]
    evidence.sort(key=lambda e: -e["weighted"])
    return {"gene": gene, "run_id": run_id, "cohort": cohort, "scoring_version": version, "rank": rank,
            "score": score, "evidence": evidence,
            "tractability": {"score": float(tractability), "best_pchembl": None if best is None else float(best),
                             "n_active_compounds": int(n_active), "rows": by_type.get("tractability", [])},
            "compounds": compounds}


def similar_compounds(store: str | Path, smiles: str, *, top: int = 10, run_id: str | None = None) -> dict[str, Any]:
    """The ``top`` compounds of the results DB nearest to a SMILES (Morgan r=2, 2048 bits, Tanimoto) and
    their linked targets in the run (latest by default)."""
    from molecules.io import standardise_smiles
    from molecules.similarity import packed_fingerprints, tanimoto_packed

    top = _check_int("top", top, 1, MAX_SIMILAR)
    query = standardise_smiles(smiles)  # MoleculeError on a malformed SMILES
    qfp = packed_fingerprints([query])[0]
    con = connect(store, read_only=True)
    try:
        run_id = _run(con, run_id)
        res = con.execute("SELECT compound_id, name, canonical_smiles, morgan_fp FROM compounds "
                          "WHERE morgan_fp IS NOT NULL ORDER BY compound_id").fetchnumpy()
        ids = np.asarray(res["compound_id"], dtype=object)
        if len(ids) == 0:
            return {"query": query, "run_id": run_id, "hits": []}
        lib = np.frombuffer(b"".join(res["morgan_fp"]), dtype=np.uint8).reshape(len(ids), -1)
        sim = tanimoto_packed(qfp, lib)
        k = min(top, len(sim))
        best = np.argpartition(-sim, k - 1)[:k]
        best = best[np.lexsort((ids[best].astype(str), -sim[best]))]
        hit_ids = [str(i) for i in ids[best]]
        links = con.execute("SELECT compound_id, gene, pchembl, activity_type, link_type, model_version "
                            "FROM target_compound_links WHERE run_id = ? AND compound_id IN (SELECT unnest(?)) "
                            "ORDER BY compound_id, pchembl DESC, gene", [run_id, hit_ids]).fetchall()
    finally:
        con.close()
    targets: dict[str, list[dict[str, Any]]] = {}
    for cid, gene, pchembl, atype, link, version in links:
        targets.setdefault(cid, []).append({"gene": gene, "pchembl": pchembl, "activity_type": atype,
                                            "link": link or "measured", "model_version": version or None})
    hits = [{"id": str(ids[i]), "name": res["name"][i], "canonical_smiles": res["canonical_smiles"][i],
             "tanimoto": float(sim[i]), "targets": targets.get(str(ids[i]), [])} for i in best]
    return {"query": query, "run_id": run_id, "hits": hits}
