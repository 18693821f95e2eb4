"""Queries of the results DB shared by the CLI and the HTTP API: ranked targets (custom weights, filters,
paging), one target's explanation (every evidence row behind its score), similar compounds.

Every function takes a store path, opens the results DB read-only and returns JSON-ready dicts; bad
input raises ``QueryError`` (or ``ScoringError`` for weights, ``MoleculeError`` for SMILES).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from flows.results.ranking import EVIDENCE_TYPES, validate_weights, weighted_harmonic_sum
from flows.results.db import connect, db_path, latest_run_id
from fusion.errors import QueryError
from molecules.domain import DOMAIN_TANIMOTO

MAX_PAGE = 1000          # rows per page at most
MAX_SIMILAR = 500        # hits per similarity query at most
COMPOUNDS_PER_TARGET = 5
CACHED_COMPOUNDS = 20    # per gene, read with the ranking matrix (at most this many per target in a page)


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


_TOP_LINKS_SQL = (
    "SELECT l.*, c.name, c.canonical_smiles FROM (SELECT *, row_number() OVER (PARTITION BY gene ORDER BY "
    "pchembl DESC, compound_id) AS k FROM target_compound_links WHERE run_id = ?) l JOIN compounds c "
    "USING (compound_id) WHERE l.k <= ?")


def _val(x: Any) -> Any:
    """A DB value as JSON: NULL (None, numpy masked, NaN) -> None, numpy scalars -> Python."""
    if x is None or x is np.ma.masked or (isinstance(x, float) and x != x):
        return None
    return x.item() if isinstance(x, np.generic) else x


def _link_json(r: dict[str, Any]) -> dict[str, Any]:
    """One linked compound: its activity (type, pChEMBL), measured / predicted, and for predicted links the
    model version, the conformal interval and the applicability domain (DB columns of older runs: None)."""
    v = {k: _val(r.get(k)) for k in ("compound_id", "name", "canonical_smiles", "pchembl", "activity_type",
                                      "link_type", "model_version", "pchembl_lower", "pchembl_upper",
                                      "interval_nominal", "nn_tanimoto_target", "nn_tanimoto_any", "in_domain")}
    p = None if v["pchembl"] is None else float(v["pchembl"])
    out = {"id": str(v["compound_id"]), "name": None if v["name"] is None else str(v["name"]),
           "canonical_smiles": str(v["canonical_smiles"]), "activity": {"type": v["activity_type"], "pchembl": p},
           "pchembl": p, "link": str(v["link_type"]) if v["link_type"] else "measured",
           "model_version": str(v["model_version"]) if v["model_version"] else None}
    if out["link"] == "predicted":
        out["interval"] = {"lower": v["pchembl_lower"], "upper": v["pchembl_upper"], "nominal": v["interval_nominal"]}
        out["domain"] = {"nn_tanimoto_target": v["nn_tanimoto_target"], "nn_tanimoto_any": v["nn_tanimoto_any"],
                         "in_domain": None if v["in_domain"] is None else bool(v["in_domain"]),
                         "threshold": DOMAIN_TANIMOTO}
    return out


def _compounds(con: duckdb.DuckDBPyConnection, run_id: str, genes: list[str],
               per_gene: int) -> dict[str, list[dict[str, Any]]]:
    """Linked compounds of the genes, most potent first (at most ``per_gene`` each)."""
    if not genes or per_gene <= 0:
        return {}
    cur = con.execute(f"{_TOP_LINKS_SQL} AND l.gene IN (SELECT unnest(?)) ORDER BY l.gene, l.pchembl DESC, "
                      "l.compound_id", [run_id, per_gene, genes])
    names = [d[0] for d in cur.description]
    out: dict[str, list[dict[str, Any]]] = {}
    for row in cur.fetchall():
        r = dict(zip(names, row))
        out.setdefault(r["gene"], []).append(_link_json(r))
    return out


@dataclass
class _RankInputs:
    """One run's genes x evidence-types matrix and compound summary, read once per results-DB state."""

    run_id: str
    scoring: dict[str, Any]
    genes: np.ndarray
    matrix: np.ndarray
    tractability: np.ndarray
    n_active: np.ndarray
    alpha: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # gene symbol order
    links: dict[str, np.ndarray] = field(default_factory=dict)  # top links per gene, sorted by gene
    link_bounds: dict[str, tuple[int, int]] | None = None       # None until prefetched (second use)
    uses: int = 0

    def prefetch_links(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read every gene's top CACHED_COMPOUNDS links once (worth it from the second query of a DB state)."""
        self.links = con.execute(f"{_TOP_LINKS_SQL} ORDER BY l.gene, l.pchembl DESC, l.compound_id",
                                 [self.run_id, CACHED_COMPOUNDS]).fetchnumpy()
        genes_l = np.asarray(self.links["gene"], dtype=str)
        starts = np.flatnonzero(np.r_[True, genes_l[1:] != genes_l[:-1]]) if len(genes_l) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(genes_l)]
        self.link_bounds = {str(genes_l[a]): (int(a), int(b)) for a, b in zip(starts, ends)}

    def compounds_of(self, gene: str, n: int) -> list[dict[str, Any]]:
        """The gene's n most potent linked compounds (JSON-ready), from the prefetched links."""
        lo, hi = (self.link_bounds or {}).get(gene, (0, 0))
        lk = self.links
        return [_link_json({k: col[i] for k, col in lk.items()}) for i in range(lo, min(hi, lo + n))]


_CACHE: dict[tuple, _RankInputs] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def clear_cache() -> None:
    """Forget the cached rank inputs (they are keyed on the DB files' size and mtime, so never stale)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _db_state(store: str | Path) -> tuple:
    """Identity of the results DB's current contents: path, size and mtime of the file and its WAL."""
    path = db_path(store)
    if not path.exists():
        raise QueryError(f"{path}: no results DB; run `fusionrx run` on this store first")
    wal = path.with_name(path.name + ".wal")
    sig = [(f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None for f in (path, wal)]
    return (str(path.resolve()), *sig)


def _rank_inputs(store: str | Path, run_id: str | None, con_holder: list) -> _RankInputs:
    key = (_db_state(store), run_id)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    con = _open(store, con_holder)
    rid = _run(con, run_id)
    scoring = run_scoring(con, rid)
    cols = ", ".join(EVIDENCE_TYPES)
    res = con.execute(f"SELECT gene, {cols}, tractability, n_active_compounds FROM targets WHERE run_id = ?",
                      [rid]).fetchnumpy()
    inputs = _RankInputs(run_id=rid, scoring=scoring, genes=np.asarray(res["gene"], dtype=str),
                         matrix=np.column_stack([np.asarray(res[t], dtype=float) for t in EVIDENCE_TYPES]),
                         tractability=np.asarray(res["tractability"], dtype=float),
                         n_active=np.asarray(res["n_active_compounds"], dtype=float))
    inputs.alpha = np.argsort(np.argsort(inputs.genes, kind="stable"), kind="stable")
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = inputs
    return inputs


def _open(store: str | Path, con_holder: list) -> duckdb.DuckDBPyConnection:
    """The call's read-only connection, opened on first need (cached calls may need none)."""
    if not con_holder:
        con_holder.append(connect(store, read_only=True))
    return con_holder[0]


def ranked_targets(store: str | Path, *, top: int = 10, offset: int = 0, weights: dict[str, float] | None = None,
                   min_score: float | None = None, has_compound: bool = False, run_id: str | None = None,
                   compounds_per_target: int = COMPOUNDS_PER_TARGET,
                   evidence_min: dict[str, float] | None = None) -> dict[str, Any]:
    """A page of ranked targets; ``weights`` (evidence type -> weight) replaces the run's: types not named get 0.

    Ranks are over all genes under the weights; ``min_score`` and ``has_compound`` (a linked compound with
    pChEMBL >= the active threshold, measured or predicted) filter, ``offset``/``top`` page the result.
    Returns run_id, scoring_version, weights, total (genes passing the filters), offset, top and rows
    (gene, rank, score, evidence: type -> score, tractability, compounds). The genes x types matrix is
    read once per state of the DB file (size, mtime) and re-weighted in numpy on every call.
    """
    top = _check_int("top", top, 1, MAX_PAGE)
    offset = _check_int("offset", offset, 0, 10**9)
    _check_int("compounds_per_target", compounds_per_target, 0, CACHED_COMPOUNDS)
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not 0.0 <= float(min_score) <= 1.0):
        raise QueryError(f"min_score must be a number in [0, 1], found {min_score!r}")
    given = validate_weights(dict(weights)) if weights is not None else None
    floors = _evidence_floors(evidence_min)
    con_holder: list = []
    try:
        ri = _rank_inputs(store, run_id, con_holder)
        used = ({t: given.get(t, 0.0) for t in EVIDENCE_TYPES} if given is not None
                else {t: float(ri.scoring["weights"].get(t, 0.0)) for t in EVIDENCE_TYPES})
        score = weighted_harmonic_sum(ri.matrix, np.array([used[t] for t in EVIDENCE_TYPES]))
        order = np.lexsort((ri.alpha, -score))  # = rank_order(genes, score), integer tie-break
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        keep = np.ones(len(ri.genes), dtype=bool)
        if min_score is not None:
            keep &= score >= float(min_score)
        if has_compound:
            keep &= ri.n_active > 0
        for k, t in enumerate(EVIDENCE_TYPES):
            if t in floors:
                keep &= ri.matrix[:, k] >= floors[t]
        kept = order[keep[order]]
        page = kept[offset: offset + top]
        genes = [str(g) for g in ri.genes[page]]
        ri.uses += 1
        if ri.link_bounds is None and ri.uses >= 2:  # a second query of this DB state: cache every gene's links
            ri.prefetch_links(_open(store, con_holder))
        if ri.link_bounds is None:  # a one-off query (CLI): read only this page's compounds
            found = _compounds(_open(store, con_holder), ri.run_id, genes, compounds_per_target)
            page_compounds = {g: found.get(g, []) for g in genes}
        else:
            page_compounds = {g: ri.compounds_of(g, compounds_per_target) for g in genes}
    finally:
        for con in con_holder:
            con.close()
    rows = [{"gene": g, "rank": int(rank[i]), "score": float(score[i]),
             "evidence": {t: float(ri.matrix[i, k]) for k, t in enumerate(EVIDENCE_TYPES)},
             "tractability": float(ri.tractability[i]), "compounds": page_compounds[g]}
            for g, i in zip(genes, page)]
    return {"run_id": ri.run_id, "scoring_version": ri.scoring.get("version"), "weights": used,
            "total": int(len(kept)), "offset": offset, "top": top, "rows": rows}


def _evidence_floors(evidence_min: dict[str, float] | None) -> dict[str, float]:
    """Per evidence type, the least score a gene must have (types checked, scores in [0, 1])."""
    floors = {}
    for t, v in (evidence_min or {}).items():
        if t not in EVIDENCE_TYPES:
            raise QueryError(f"evidence filter: unknown evidence type {t!r}; known: {list(EVIDENCE_TYPES)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise QueryError(f"evidence filter {t}: the least score must be a number in [0, 1], found {v!r}")
        floors[t] = float(v)
    return floors


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
        models = _model_cards(con, run_id, {c["model_version"] for c in compounds if c["model_version"]})
        ids = _target_ids(con, run_id, gene)
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
            "compounds": compounds, "ids": ids, "activity_models": models}


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
                       [table, column]).fetchone()[0] > 0


def _model_cards(con: duckdb.DuckDBPyConnection, run_id: str, versions: set[str]) -> dict[str, Any]:
    """The cards (molecules.model_card) of the activity models behind a target's predicted links."""
    if not versions or not _has_column(con, "activity_models", "card_json"):
        return {}
    rows = con.execute("SELECT model_version, card_json FROM activity_models WHERE run_id = ? AND model_version "
                       "IN (SELECT unnest(?))", [run_id, sorted(versions)]).fetchall()
    return {v: json.loads(card) for v, card in rows}


def _target_ids(con: duckdb.DuckDBPyConnection, run_id: str, gene: str) -> dict[str, Any]:
    """HGNC symbol (the ranked gene) and the HGNC / Ensembl ids the compound library gives for it."""
    out: dict[str, Any] = {"hgnc_symbol": gene, "hgnc_id": None, "ensembl_id": None}
    if _has_column(con, "target_compound_links", "target_ensembl_id"):
        row = con.execute("SELECT any_value(target_hgnc_id), any_value(target_ensembl_id) FROM target_compound_links "
                          "WHERE run_id = ? AND gene = ? AND (target_hgnc_id IS NOT NULL OR target_ensembl_id IS NOT "
                          "NULL)", [run_id, gene]).fetchone()
        out["hgnc_id"], out["ensembl_id"] = (row or (None, None))
    return out


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
    names = [None if n is np.ma.masked or n is None else str(n) for n in res["name"]]  # NULL name: masked
    hits = [{"id": str(ids[i]), "name": names[i], "canonical_smiles": str(res["canonical_smiles"][i]),
             "tanimoto": float(sim[i]), "targets": targets.get(str(ids[i]), [])} for i in best]
    return {"query": query, "run_id": run_id, "hits": hits}
