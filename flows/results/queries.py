"""Queries of the results DB shared by the CLI and the HTTP API: ranked targets (custom weights, filters,
paging), one target's explanation (every evidence row behind its score), similar compounds.

Every function takes a store path and returns JSON-ready dicts; bad input raises ``QueryError`` (or
``ScoringError`` for weights, ``MoleculeError`` for SMILES). The results DB is only ever opened read-only,
one connection at a time per process (flows.results.db.reading), and read into a snapshot per state of the
file (its inode, size and mtime: a run's write_run swaps in a new file): each part of a run's results (the
targets matrix, evidence rows, links, the compound library) is read once per state, on first need, and the
queries answer from memory. A query whose snapshot's file is replaced while it reads starts over on the new
file, so an answer never mixes two states.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import duckdb
import numpy as np

from flows.results.ranking import EVIDENCE_TYPES, ScoringError, validate_weights
from flows.results.db import db_path, experiment_rows, latest_run_id, reading
from fusion.errors import QueryError
from molecules.domain import DOMAIN_TANIMOTO

MAX_PAGE = 1000          # rows per page at most
MAX_SIMILAR = 500        # hits per similarity query at most
COMPOUNDS_PER_TARGET = 5
CACHED_COMPOUNDS = 20    # per gene, at most this many per target in a page
T = TypeVar("T")


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
_LINKS_SQL = ("SELECT l.*, c.name, c.canonical_smiles FROM target_compound_links l JOIN compounds c "
              "USING (compound_id) WHERE l.run_id = ?")


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
    """Linked compounds of the genes, most potent first (at most ``per_gene`` each): a one-off query's."""
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


class _Stale(Exception):
    """The results DB file was replaced while a snapshot of it was being read (the caller starts over)."""


@dataclass
class _Rank:
    """One run's genes x evidence-types matrix and per-gene target columns (the `targets` table)."""

    genes: np.ndarray            # symbols, the table's order
    matrix: np.ndarray           # [G, T] type scores as stored (NaN kept: shown as null)
    clean_t: np.ndarray          # its transpose [T, G] (contiguous) with NaN -> 0: what scores are computed from
    tractability: np.ndarray
    n_active: np.ndarray
    alpha: np.ndarray            # each gene's position in symbol order (the rank tie-break)
    columns: dict[str, np.ndarray]  # rank, score, best_pchembl, cohort, scoring_version as fetched (NULL masked)
    index: dict[str, int]        # symbol -> row
    _upper: dict[str, int] | None = None

    def row_of(self, gene: str) -> int | None:
        """The row of a symbol as given, else of the first symbol (in symbol order) equal to it ignoring case."""
        i = self.index.get(gene)
        if i is None:
            if self._upper is None:  # built on the first miss only
                upper: dict[str, int] = {}
                for j in np.argsort(self.genes, kind="stable"):
                    upper.setdefault(str(self.genes[j]).upper(), int(j))
                self._upper = upper
            i = self._upper.get(gene.upper())
        return i


@dataclass
class _Snapshot:
    """What the queries read of one run, for one state of the results DB file (inode, size, mtime): each part
    read at most once, when first needed, over a connection checked to be on that same file. Parts are added,
    never changed, so threads share a snapshot without a lock (two threads may both build the same JSON memo).
    What the queries return may hold the snapshot's own dicts (the linked compounds): callers must not mutate
    answers."""

    store: Path
    state: tuple
    run_id: str
    parts: dict[str, Any] = field(default_factory=dict)
    link_json: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # gene -> its links as JSON, memo
    uses: int = 0

    def parts_of(self, con: duckdb.DuckDBPyConnection | None, *names: str) -> tuple[Any, ...]:
        """Parts (keys of _PARTS), those not yet read read now over ``con`` (a connection on this snapshot's
        file) or, with None, over a new one. Raises _Stale when the DB file is no longer this snapshot's."""
        missing = [n for n in names if n not in self.parts]
        if missing and con is not None:
            for n in missing:
                self.parts[n] = _PARTS[n](con, self.run_id)
        elif missing:
            with _checked(self.store, self.state) as con:
                for n in missing:
                    if n not in self.parts:  # another thread may have read it while this one waited
                        self.parts[n] = _PARTS[n](con, self.run_id)
        return tuple(self.parts[n] for n in names)

    def repeated(self, con: duckdb.DuckDBPyConnection | None, *names: str) -> bool:
        """Whether to answer from whole parts: they are read, or this is the state's second query or later
        (then they are read now). A one-off query (the CLI's) reads only its own rows instead."""
        self.uses += 1
        if all(n in self.parts for n in names) or self.uses >= 2:
            self.parts_of(con, *names)
            return True
        return False

    def compounds_of(self, gene: str, n: int) -> list[dict[str, Any]]:
        """The gene's n most potent linked compounds (JSON-ready; a new list of shared dicts: do not mutate),
        from the links part (read)."""
        if n <= 0:
            return []
        out = self.link_json.get(gene)
        if out is None:
            out = [_link_json(r) for r in self.parts["links"].get(gene, ())]
            self.link_json[gene] = out
        return out[:n]


_CACHE: dict[tuple, _Snapshot] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4
_MAX_TRIES = 20  # DB swaps in a row during one query before giving up (each swap is a whole run's write)


def clear_cache() -> None:
    """Forget the cached snapshots (they are keyed on the DB file's inode, size and mtime, so never stale)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _db_state(store: str | Path) -> tuple:
    """Identity of the results DB's current contents: path, then inode, size and mtime of the file and its WAL
    (a run's write_run replaces the file by a rename: a new inode)."""
    path = db_path(store)
    out: list[Any] = [str(path.resolve())]
    for f in (path, path.with_name(path.name + ".wal")):
        try:
            st = f.stat()
        except FileNotFoundError:
            if f is path:
                raise QueryError(f"{path}: no results DB; run `fusionrx run` on this store first") from None
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@contextmanager
def _checked(store: str | Path, state: tuple) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection (flows.results.db.reading) that is on the DB file of ``state``: the file is the
    same after the connection was opened as before, so the connection reads it. Raises _Stale otherwise."""
    with reading(store) as con:
        if _db_state(store) != state:
            raise _Stale
        yield con


def _on_snapshot(store: str | Path, run_id: str | None, needs: tuple[str, ...],
                 fn: Callable[[_Snapshot, duckdb.DuckDBPyConnection | None], T]) -> T:
    """fn(snapshot, con) on the snapshot of the DB file's current state for ``run_id`` (latest by default) with
    the parts ``needs`` read. Without them cached, the snapshot is made or completed over one connection,
    which fn gets too (for its one-off reads), else con is None. Started over on the new file when the DB is
    swapped meanwhile (_Stale), so an answer never mixes two states of the file."""
    for _ in range(_MAX_TRIES):
        state = _db_state(store)
        key = (state, run_id)
        with _CACHE_LOCK:
            snap = _CACHE.get(key)
        try:
            if snap is not None and all(n in snap.parts for n in needs):
                return fn(snap, None)
            with _checked(store, state) as con:
                if snap is None:
                    with _CACHE_LOCK:
                        snap = _CACHE.get(key)
                if snap is None:
                    snap = _Snapshot(store=Path(store), state=state, run_id=_run(con, run_id))
                    _remember(key, snap)
                snap.parts_of(con, *needs)
                return fn(snap, con)
        except _Stale:
            continue
    raise QueryError(f"{db_path(store)}: the results DB was replaced {_MAX_TRIES} times while one query read it; "
                     "try again")


def _remember(key: tuple, snap: _Snapshot) -> None:
    """Cache a new snapshot; those of the same path's replaced file go (never asked for again), then the oldest
    beyond _CACHE_SIZE."""
    state = key[0]
    with _CACHE_LOCK:
        for k in [k for k in _CACHE if k[0][0] == state[0] and k[0] != state]:
            del _CACHE[k]
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = snap


def _load_rank(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[dict[str, Any], _Rank]:
    """The run's scoring config and its targets table as arrays."""
    scoring = run_scoring(con, run_id)
    cols = ", ".join(EVIDENCE_TYPES)
    res = con.execute(f"SELECT gene, {cols}, tractability, n_active_compounds, rank, score, best_pchembl, cohort, "
                      "scoring_version FROM targets WHERE run_id = ?", [run_id]).fetchnumpy()
    genes = np.asarray(res["gene"], dtype=str)
    matrix = (np.column_stack([np.asarray(res[t], dtype=float) for t in EVIDENCE_TYPES]) if len(genes)
              else np.zeros((0, len(EVIDENCE_TYPES))))
    return scoring, _Rank(
        genes=genes, matrix=matrix, clean_t=np.ascontiguousarray(np.nan_to_num(matrix).T),
        tractability=np.asarray(res["tractability"], dtype=float),
        n_active=np.asarray(res["n_active_compounds"], dtype=float),
        alpha=np.argsort(np.argsort(genes, kind="stable"), kind="stable"),
        columns={k: res[k] for k in ("rank", "score", "best_pchembl", "cohort", "scoring_version")},
        index=dict(zip(genes.tolist(), range(len(genes)))))


def _load_links(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every linked compound of the run as DB rows (dicts), per gene, most potent first."""
    cur = con.execute(f"{_LINKS_SQL} ORDER BY l.gene, l.pchembl DESC, l.compound_id", [run_id])
    names = [d[0] for d in cur.description]
    out: dict[str, list[dict[str, Any]]] = {}
    for row in cur.fetchall():
        r = dict(zip(names, row))
        out.setdefault(r["gene"], []).append(r)
    return out


_EVIDENCE_SQL = ("SELECT gene, evidence_type, source, statistic, raw_value, score, row_ref, details_json FROM evidence "
                 "WHERE run_id = ?")
_EVIDENCE_ORDER = " ORDER BY gene, evidence_type, score DESC, source, rowid"  # ties: as written


def _load_evidence(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list[tuple]]:
    """Every evidence row of the run, per gene, by type, score (highest first) and source."""
    out: dict[str, list[tuple]] = {}
    for row in con.execute(_EVIDENCE_SQL + _EVIDENCE_ORDER, [run_id]).fetchall():
        out.setdefault(row[0], []).append(row[1:])
    return out


def _load_cards(con: duckdb.DuckDBPyConnection, run_id: str, versions: list[str] | None = None) -> dict[str, str]:
    """Activity model version -> its card (JSON text), of the run (only ``versions`` if given); none in a DB
    written before model cards."""
    if not _has_column(con, "activity_models", "card_json"):
        return {}
    sql = "SELECT model_version, card_json FROM activity_models WHERE run_id = ?"
    if versions is None:
        return dict(con.execute(sql, [run_id]).fetchall())
    return dict(con.execute(sql + " AND model_version IN (SELECT unnest(?))", [run_id, versions]).fetchall())


def _load_ids(con: duckdb.DuckDBPyConnection, run_id: str, gene: str | None = None) -> dict[str, tuple[Any, Any]]:
    """Gene -> (HGNC id, Ensembl id) as the compound library gives them (only ``gene``'s if given); none in a
    DB written before target ids."""
    if not _has_column(con, "target_compound_links", "target_ensembl_id"):
        return {}
    sql = ("SELECT gene, any_value(target_hgnc_id), any_value(target_ensembl_id) FROM target_compound_links WHERE "
           "run_id = ? AND (target_hgnc_id IS NOT NULL OR target_ensembl_id IS NOT NULL)")
    rows = (con.execute(sql + " GROUP BY gene", [run_id]) if gene is None
            else con.execute(sql + " AND gene = ? GROUP BY gene", [run_id, gene])).fetchall()
    return {g: (h, e) for g, h, e in rows}


@dataclass
class _Library:
    """The compounds with a fingerprint (by id) and the run's links per compound, for similarity search."""

    ids: np.ndarray
    names: list[str | None]
    smiles: list[str]
    fps: np.ndarray                              # [n, n_bytes] packed Morgan bits
    targets: dict[str, list[tuple]]              # compound id -> (gene, pchembl, type, link, version) rows


def _load_library(con: duckdb.DuckDBPyConnection, run_id: str) -> _Library:
    res = con.execute("SELECT compound_id, name, canonical_smiles, morgan_fp FROM compounds "
                      "WHERE morgan_fp IS NOT NULL ORDER BY compound_id").fetchnumpy()
    ids = np.asarray(res["compound_id"], dtype=object)
    fps = (np.frombuffer(b"".join(res["morgan_fp"]), dtype=np.uint8).reshape(len(ids), -1) if len(ids)
           else np.zeros((0, 0), dtype=np.uint8))
    targets: dict[str, list[tuple]] = {}
    for cid, *rest in con.execute("SELECT compound_id, gene, pchembl, activity_type, link_type, model_version "
                                  "FROM target_compound_links WHERE run_id = ? ORDER BY compound_id, pchembl DESC, "
                                  "gene", [run_id]).fetchall():
        targets.setdefault(cid, []).append(tuple(rest))
    names = [None if n is np.ma.masked or n is None else str(n) for n in res["name"]]  # NULL name: masked
    return _Library(ids=ids, names=names, smiles=[str(x) for x in res["canonical_smiles"]], fps=fps, targets=targets)


_PARTS: dict[str, Callable[[duckdb.DuckDBPyConnection, str], Any]] = {
    "rank": _load_rank, "links": _load_links, "evidence": _load_evidence, "cards": _load_cards, "ids": _load_ids,
    "library": _load_library, "experiments": experiment_rows}


def _harmonic_scores(clean_t: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """flows.results.ranking.weighted_harmonic_sum of a NaN-free matrix given as its transpose [T, G], bit for
    bit: the per-gene sort over the T types is a sorting network on whole (contiguous) type rows, where
    numpy's row-wise sort of T values is ~20x slower on 20,000 genes; the weighted sum is the same matmul."""
    w = np.asarray(weights, dtype=float)
    cols = [row * wk for row, wk in zip(clean_t, w)]
    n = len(cols)
    for p in range(n):  # odd-even transposition network: n passes sort n columns, largest first
        for i in range(p % 2, n - 1, 2):
            cols[i], cols[i + 1] = np.maximum(cols[i], cols[i + 1]), np.minimum(cols[i], cols[i + 1])
    ws = np.column_stack(cols) if cols else np.zeros((clean_t.shape[1], 0))
    decay = 1.0 / np.arange(1, ws.shape[1] + 1) ** 2
    norm = float(np.sort(w)[::-1] @ decay)
    if norm <= 0:
        raise ScoringError(f"weights {w.tolist()}: at least one must be > 0")
    return ws @ decay / norm


def _page(score: np.ndarray, alpha: np.ndarray, keep: np.ndarray | None, offset: int,
          top: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of one page of the genes ordered by score (highest first, ties by symbol: ``alpha``), among those
    ``keep`` marks (None: all), their ranks among all genes (1 = best) and how many are kept.

    The same as a full np.lexsort((alpha, -score)), but sorts only the genes that can be on the page: those
    at or above the (offset + top)-th best kept score."""
    n = len(score)
    kept = np.arange(n) if keep is None else np.flatnonzero(keep)
    m = offset + top
    cand = kept
    if m < len(kept):
        s = score[kept]
        cand = kept[s >= np.partition(s, len(kept) - m)[len(kept) - m]]
    page = cand[np.lexsort((alpha[cand], -score[cand]))][offset: m]
    if keep is None:
        return page, np.arange(offset + 1, offset + 1 + len(page)), n
    if not len(page):
        return page, np.zeros(0, dtype=np.int64), len(kept)
    ahead = np.flatnonzero(score >= score[page].min())  # every gene ranked before a page row is among these
    ahead = ahead[np.lexsort((alpha[ahead], -score[ahead]))]
    pos = np.empty(n, dtype=np.int64)
    pos[ahead] = np.arange(1, len(ahead) + 1)
    return page, pos[page], len(kept)


def ranked_targets(store: str | Path, *, top: int = 10, offset: int = 0, weights: dict[str, float] | None = None,
                   min_score: float | None = None, has_compound: bool = False, run_id: str | None = None,
                   compounds_per_target: int = COMPOUNDS_PER_TARGET,
                   evidence_min: dict[str, float] | None = None) -> dict[str, Any]:
    """A page of ranked targets; ``weights`` (evidence type -> weight) replaces the run's: types not named get 0.

    Ranks are over all genes under the weights; ``min_score`` and ``has_compound`` (a linked compound with
    pChEMBL >= the active threshold, measured or predicted) filter, ``offset``/``top`` page the result.
    Returns run_id, scoring_version, weights, total (genes passing the filters), offset, top and rows
    (gene, rank, score, evidence: type -> score, tractability, compounds). The genes x types matrix is
    read once per state of the DB file (inode, size, mtime) and re-weighted in numpy on every call; every
    gene's links are read from the second query on a state (a one-off query reads only its page's).
    """
    top = _check_int("top", top, 1, MAX_PAGE)
    offset = _check_int("offset", offset, 0, 10**9)
    _check_int("compounds_per_target", compounds_per_target, 0, CACHED_COMPOUNDS)
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not 0.0 <= float(min_score) <= 1.0):
        raise QueryError(f"min_score must be a number in [0, 1], found {min_score!r}")
    given = validate_weights(dict(weights)) if weights is not None else None
    floors = _evidence_floors(evidence_min)

    def page_of(snap: _Snapshot, con: duckdb.DuckDBPyConnection | None) -> dict[str, Any]:
        scoring, ri = snap.parts["rank"]
        used = ({t: given.get(t, 0.0) for t in EVIDENCE_TYPES} if given is not None
                else {t: float(scoring["weights"].get(t, 0.0)) for t in EVIDENCE_TYPES})
        score = _harmonic_scores(ri.clean_t, np.array([used[t] for t in EVIDENCE_TYPES]))
        keep = None
        if min_score is not None or has_compound or floors:
            keep = np.ones(len(ri.genes), dtype=bool)
            if min_score is not None:
                keep &= score >= float(min_score)
            if has_compound:
                keep &= ri.n_active > 0
            for k, t in enumerate(EVIDENCE_TYPES):
                if t in floors:
                    keep &= ri.matrix[:, k] >= floors[t]
        page, ranks, total = _page(score, ri.alpha, keep, offset, top)
        genes = [str(g) for g in ri.genes[page]]
        if snap.repeated(con, "links"):
            page_compounds = {g: snap.compounds_of(g, compounds_per_target) for g in genes}
        else:
            with _connection(snap, con) as c:
                found = _compounds(c, snap.run_id, genes, compounds_per_target)
            page_compounds = {g: found.get(g, []) for g in genes}
        rows = [{"gene": g, "rank": int(r), "score": float(score[i]),
                 "evidence": {t: float(ri.matrix[i, k]) for k, t in enumerate(EVIDENCE_TYPES)},
                 "tractability": float(ri.tractability[i]), "compounds": page_compounds[g]}
                for g, i, r in zip(genes, page, ranks)]
        return {"run_id": snap.run_id, "scoring_version": scoring.get("version"), "weights": used,
                "total": int(total), "offset": offset, "top": top, "rows": rows}

    return _on_snapshot(store, run_id, ("rank",), page_of)


@contextmanager
def _connection(snap: _Snapshot, con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """``con`` if given (the query's own, on the snapshot's file), else a new checked one closed on exit."""
    if con is not None:
        yield con
    else:
        with _checked(snap.store, snap.state) as c:
            yield c


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


def explain_target(store: str | Path, gene: str, *, run_id: str | None = None,
                   compounds_per_target: int = 50) -> dict[str, Any]:
    """One gene's rank and score, each evidence type's score, weight and contribution, and every evidence
    row behind it (source, statistic, raw value, score, row reference), tractability and compounds.
    Symbols match case-insensitively (the exact symbol first). From the second query on a state of the DB
    file, every gene's rows are read once and answered from memory; a one-off query reads only this gene's."""

    def explain(snap: _Snapshot, con: duckdb.DuckDBPyConnection | None) -> dict[str, Any]:
        scoring, ri = snap.parts["rank"]
        if not isinstance(gene, str) or not gene.strip():
            raise QueryError(f"gene must be a non-empty symbol, found {gene!r}")
        i = ri.row_of(gene.strip())
        if i is None:
            raise QueryError(f"gene {gene!r} is not among the ranked genes of run {snap.run_id}")
        g = str(ri.genes[i])
        if snap.repeated(con, "evidence", "links", "cards", "ids"):
            ev = snap.parts["evidence"].get(g, [])
            compounds = snap.compounds_of(g, compounds_per_target)
            cards, ids = snap.parts["cards"], snap.parts["ids"]
        else:
            with _connection(snap, con) as c:
                ev = [r[1:] for r in c.execute(_EVIDENCE_SQL + " AND gene = ?" + _EVIDENCE_ORDER,
                                               [snap.run_id, g]).fetchall()]
                compounds = _compounds(c, snap.run_id, [g], compounds_per_target).get(g, [])
                used = sorted({x["model_version"] for x in compounds if x["model_version"]})
                cards = _load_cards(c, snap.run_id, used) if used else {}
                ids = _load_ids(c, snap.run_id, g)
        versions = sorted({x["model_version"] for x in compounds if x["model_version"]})
        hgnc, ensembl = ids.get(g, (None, None))
        type_scores = {t: float(ri.matrix[i, k]) for k, t in enumerate(EVIDENCE_TYPES)}
        weights = {k: float(scoring["weights"].get(k, 0.0)) for k in EVIDENCE_TYPES}
        by_type: dict[str, list[dict[str, Any]]] = {}
        for etype, source, stat, raw, s, ref, details in ev:
            by_type.setdefault(etype, []).append({"source": source, "statistic": stat, "raw_value": raw,
                                                  "score": s, "row_ref": ref, "details": json.loads(details)})
        evidence = [{"type": k, "score": type_scores[k], "weight": weights[k],
                     "weighted": weights[k] * type_scores[k], "n_rows": len(by_type.get(k, [])),
                     "rows": by_type.get(k, [])} for k in EVIDENCE_TYPES]
        evidence.sort(key=lambda e: -e["weighted"])
        col = {k: _val(v[i]) for k, v in ri.columns.items()}
        best = col["best_pchembl"]
        return {"gene": g, "run_id": snap.run_id, "cohort": col["cohort"], "scoring_version": col["scoring_version"],
                "rank": int(col["rank"]), "score": float(col["score"]), "evidence": evidence,
                "tractability": {"score": float(ri.tractability[i]), "best_pchembl": None if best is None
                                 else float(best), "n_active_compounds": int(ri.n_active[i]),
                                 "rows": by_type.get("tractability", [])},
                "compounds": compounds, "ids": {"hgnc_symbol": g, "hgnc_id": hgnc, "ensembl_id": ensembl},
                "activity_models": {v: json.loads(cards[v]) for v in versions if v in cards}}

    return _on_snapshot(store, run_id, ("rank",), explain)


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
                       [table, column]).fetchone()[0] > 0


def similar_compounds(store: str | Path, smiles: str, *, top: int = 10, run_id: str | None = None) -> dict[str, Any]:
    """The ``top`` compounds of the results DB nearest to a SMILES (Morgan r=2, 2048 bits, Tanimoto; ties by
    compound id) and their linked targets in the run (latest by default). The fingerprints are read once per
    state of the DB file."""
    from molecules.io import standardise_smiles
    from molecules.similarity import packed_fingerprints, tanimoto_packed

    top = _check_int("top", top, 1, MAX_SIMILAR)
    query = standardise_smiles(smiles)  # MoleculeError on a malformed SMILES
    qfp = packed_fingerprints([query])[0]

    def search(snap: _Snapshot, _: duckdb.DuckDBPyConnection | None) -> dict[str, Any]:
        lib = snap.parts["library"]
        if len(lib.ids) == 0:
            return {"query": query, "run_id": snap.run_id, "hits": []}
        sim = tanimoto_packed(qfp, lib.fps)
        k = min(top, len(sim))
        best = np.argpartition(-sim, k - 1)[:k]
        best = best[np.lexsort((lib.ids[best].astype(str), -sim[best]))]
        hits = []
        for i in best:
            cid = str(lib.ids[i])
            targets = [{"gene": gene, "pchembl": pchembl, "activity_type": atype, "link": link or "measured",
                        "model_version": version or None}
                       for gene, pchembl, atype, link, version in lib.targets.get(cid, ())]
            hits.append({"id": cid, "name": lib.names[i], "canonical_smiles": lib.smiles[i],
                         "tanimoto": float(sim[i]), "targets": targets})
        return {"query": query, "run_id": snap.run_id, "hits": hits}

    return _on_snapshot(store, run_id, ("library",), search)


def run_experiments(store: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """flows.results.db.query_experiments (a run's experiment rows, latest by default), read once per state of
    the DB file."""
    return _on_snapshot(store, run_id, ("experiments",), lambda snap, _: [dict(r) for r in snap.parts["experiments"]])
