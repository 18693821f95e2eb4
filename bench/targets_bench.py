"""Benchmark: target queries on a results DB of 20,000 genes x 100,000 compounds.

Builds the store once (genes with per-type evidence scores and evidence rows, 100,000 distinct
molecules assembled from drug-like fragments, ~2 target links each), then times the query functions
the CLI and the API call: top-50 with custom weights (goal: < 50 ms median), the same with filters,
one target's explanation and a Morgan/Tanimoto similarity search over all compounds.

    PYTHONPATH=$PWD python bench/targets_bench.py [--genes 20000] [--compounds 100000] [--repeats 30]

Peer in the same run: DuckDB SQL doing the same ranking (the weighted harmonic sum over the per-type score
columns of `targets`, ties by gene) on the same DB file, two ways (a list expression per row, and UNPIVOT +
window); the top-N genes must be the same as ranked_targets' and the timing ratio is printed.

Prints a table and writes bench/targets_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.results.queries import clear_cache, explain_target, ranked_targets, similar_compounds  # noqa: E402
from flows.results.ranking import EVIDENCE_TYPES, load_scoring_config, rank_targets  # noqa: E402
from flows.results.db import connect, write_run  # noqa: E402

RINGS = ["c1ccccc1", "c1ccncc1", "c1ccc2ccccc2c1", "c1cnc2ccccc2n1", "C1CCNCC1", "C1CCOCC1", "C1CNCCN1",
         "c1ccsc1", "c1ccoc1", "c1cn[nH]c1", "c1ncncn1", "C1CC1", "c1ccc2[nH]ccc2c1", "c1cnccn1", "C1CCCCC1",
         "c1ccc2ncccc2c1", "c1nc2ccccc2s1", "c1ccc2occc2c1", "C1CCNC1", "c1cscn1"]
LINKERS = ["", "C", "CC", "O", "N", "C(=O)N", "NC(=O)", "S(=O)(=O)N", "OC", "C(=O)", "NC(=O)N", "C#C"]
SUBST = ["", "F", "Cl", "C", "OC", "C(F)(F)F", "N", "O", "C#N", "Br"]


def molecules(n: int, seed: int) -> list[str]:
    """n distinct canonical SMILES assembled from ring fragments, linkers and substituents."""
    from rdkit import Chem, rdBase

    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    with rdBase.BlockLogs():
        while len(seen) < n:
            k = int(rng.integers(2, 5))
            parts = [f"{SUBST[rng.integers(len(SUBST))]}" + RINGS[rng.integers(len(RINGS))] for _ in range(k)]
            smi = parts[0]
            for p in parts[1:]:
                smi += LINKERS[rng.integers(len(LINKERS))] + p
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                seen.setdefault(Chem.MolToSmiles(mol))
    return list(seen)


def build_store(root: Path, n_genes: int, n_compounds: int, seed: int = 0) -> dict[str, float]:
    """Write a results DB with n_genes ranked genes, their evidence rows, n_compounds compounds and links."""
    from molecules.similarity import packed_fingerprints

    rng = np.random.default_rng(seed)
    scoring = load_scoring_config()
    t0 = time.perf_counter()
    genes = np.array([f"GENE{i:05d}" for i in range(n_genes)])
    m = pd.DataFrame(rng.beta(0.6, 3.0, size=(n_genes, len(EVIDENCE_TYPES))), index=genes, columns=EVIDENCE_TYPES)
    m[rng.random(m.shape) < 0.4] = 0.0
    ranked = rank_targets(m, scoring.weights)
    smiles = molecules(n_compounds, seed)
    t_mols = time.perf_counter() - t0
    fps = packed_fingerprints(smiles)
    t_fps = time.perf_counter() - t0 - t_mols
    ids = np.array([f"BC{i:06d}" for i in range(n_compounds)])
    compounds = pd.DataFrame({"compound_id": ids, "name": None, "canonical_smiles": smiles, "inchikey": "",
                              "properties_json": "{}", "morgan_fp": [bytes(r) for r in fps]})
    n_links = 2 * n_compounds
    links = pd.DataFrame({"target_gene": genes[rng.integers(0, n_genes, n_links)],
                          "compound_id": ids[rng.integers(0, n_compounds, n_links)],
                          "pchembl": np.round(rng.uniform(4.0, 9.0, n_links), 2), "activity_type": "IC50",
                          "source": "bench", "link_type": np.where(rng.random(n_links) < 0.2, "predicted", "measured"),
                          "model_version": ""}).drop_duplicates(["target_gene", "compound_id"])
    trac = links.assign(s=np.clip((links["pchembl"] - 5) / 4, 0, 1)).groupby("target_gene")["s"].max()
    ranked["tractability"] = trac.reindex(ranked["gene"]).fillna(0.0).to_numpy()
    long = m.stack().rename("score").reset_index().rename(columns={"level_0": "gene", "level_1": "evidence_type"})
    long = long.loc[long["score"] > 0]
    evidence = long.assign(source="bench_source", statistic="x", raw_value=long["score"],
                           row_ref="bench.tsv: row " + pd.Series(np.arange(len(long)) + 1, index=long.index).astype(str),
                           details_json="{}")
    run = {"run_id": "bench", "cohort": "bench", "started_utc": "2026-01-01T00:00:00",
           "finished_utc": "2026-01-01T00:00:01", "catalog": "", "config": {}, "inputs_sha256": {}, "metrics": {}}
    exp = pd.DataFrame(columns=["name", "kind", "strategy", "modalities", "task", "metric", "mean", "std", "n_folds"])
    t1 = time.perf_counter()
    write_run(root, run=run, targets=ranked, compounds=compounds, links=links, experiments=exp, evidence=evidence,
              scoring=scoring.to_dict())
    return {"molecules_s": t_mols, "fingerprints_s": t_fps, "write_s": time.perf_counter() - t1,
            "n_links": int(len(links)), "n_evidence_rows": int(len(evidence))}


def timed(fn, repeats: int, before=None) -> dict[str, float]:
    """Median and p95 wall and CPU (process) time in ms of fn over repeats calls, after one warm-up call;
    ``before`` runs untimed before each call (e.g. to drop the query cache)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return {"median_ms": statistics.median(wall), "p95_ms": float(np.percentile(wall, 95)),
            "cpu_median_ms": statistics.median(cpu), "n": repeats}


SQL_LIST = """
SELECT gene, list_sum(list_transform(list_sort([{terms}], 'DESC'), lambda x, i: x / (i * i))) / $norm AS score
FROM targets WHERE run_id = $run ORDER BY score DESC, gene LIMIT $top"""
SQL_WINDOW = """
WITH w AS (SELECT gene, {named} FROM targets WHERE run_id = $run),
long AS (UNPIVOT w ON {cols} INTO NAME evidence_type VALUE ws),
k AS (SELECT gene, ws, row_number() OVER (PARTITION BY gene ORDER BY ws DESC) AS i FROM long)
SELECT gene, sum(ws / (i * i)) / $norm AS score FROM k GROUP BY gene ORDER BY score DESC, gene LIMIT $top"""


def duckdb_ranking(con, sql: str, run_id: str, weights: dict[str, float], top: int) -> list[tuple[str, float]]:
    """Top genes and scores by the weighted harmonic sum computed in DuckDB SQL (same formula as
    flows.results.ranking.weighted_harmonic_sum: sorted w*s over types, / k^2, / the all-ones sum)."""
    w = [float(weights.get(t, 0.0)) for t in EVIDENCE_TYPES]
    decay = 1.0 / np.arange(1, len(w) + 1) ** 2
    norm = float(np.sort(w)[::-1] @ decay)
    terms = ", ".join(f"coalesce({t}, 0) * {wt!r}" for t, wt in zip(EVIDENCE_TYPES, w))
    named = ", ".join(f"coalesce({t}, 0) * {wt!r} AS {t}" for t, wt in zip(EVIDENCE_TYPES, w))
    query = sql.format(terms=terms, named=named, cols=", ".join(EVIDENCE_TYPES))
    return [(str(g), float(v)) for g, v in con.execute(query, {"norm": norm, "run": run_id, "top": top}).fetchall()]


def compare_duckdb(store: Path, repeats: int, top: int = 50, seed: int = 2) -> dict[str, dict]:
    """ranked_targets against DuckDB SQL on the same DB: same top-N (genes in order, scores to 1e-12) for
    every weight draw, and median times (ours warm = the matrix cached; SQL on an open connection)."""
    import duckdb

    from flows.results.db import db_path

    rng = np.random.default_rng(seed)
    draws = [dict(zip(EVIDENCE_TYPES, rng.uniform(0.1, 1.0, len(EVIDENCE_TYPES)).round(3))) for _ in range(repeats)]
    con = duckdb.connect(str(db_path(store)), read_only=True)
    out: dict[str, dict] = {}
    try:
        for name, sql in (("list expression", SQL_LIST), ("UNPIVOT + window", SQL_WINDOW)):
            for w in draws[:3]:  # same answers first
                ours = ranked_targets(store, top=top, weights=w, compounds_per_target=0)
                peer = duckdb_ranking(con, sql, ours["run_id"], w, top)
                assert [r["gene"] for r in ours["rows"]] == [g for g, _ in peer], f"{name}: top-{top} differ"
                assert np.allclose([r["score"] for r in ours["rows"]], [v for _, v in peer], rtol=0, atol=1e-12)
            mine, theirs, rid = iter(draws * 2), iter(draws * 2), ours["run_id"]
            t_ours = timed(lambda it=mine: ranked_targets(store, top=top, weights=next(it), compounds_per_target=0),
                           repeats)
            t_sql = timed(lambda it=theirs, q=sql, r=rid: duckdb_ranking(con, q, r, next(it), top), repeats)
            out[f"top-{top} ranking vs DuckDB SQL ({name})"] = {
                "what": f"top-{top} targets, custom weights, same top-{top} as DuckDB SQL ({name})",
                "ours": t_ours["median_ms"], "baseline": t_sql["median_ms"], "unit": "ms (median)",
                "baseline_name": f"DuckDB {duckdb.__version__} SQL, {name}",
                "ratio": t_sql["median_ms"] / t_ours["median_ms"], "same_top_n": True}
        out.update(_cold(store, draws, top, repeats, ours["run_id"]))
    finally:
        con.close()
    return out


def _cold(store: Path, draws: list[dict], top: int, repeats: int, run_id: str) -> dict[str, dict]:
    """Cold: ours with the matrix cache dropped before each call, SQL (list expression) on a connection
    opened and closed per call."""
    import duckdb

    from flows.results.db import db_path

    def sql_once(w):
        con = duckdb.connect(str(db_path(store)), read_only=True)
        try:
            return duckdb_ranking(con, SQL_LIST, run_id, w, top)
        finally:
            con.close()

    it = iter(draws * 2)
    t_ours = timed(lambda: ranked_targets(store, top=top, weights=next(it), compounds_per_target=0), repeats,
                   before=clear_cache)
    it = iter(draws * 2)
    t_sql = timed(lambda: sql_once(next(it)), repeats)
    return {f"top-{top} ranking vs DuckDB SQL, cold (DB opened per call)": {
        "what": f"top-{top} targets, custom weights, cold: ours re-reads the matrix, SQL opens the DB per call",
        "ours": t_ours["median_ms"], "baseline": t_sql["median_ms"], "unit": "ms (median)",
        "baseline_name": f"DuckDB {duckdb.__version__} SQL, list expression, connection per call",
        "ratio": t_sql["median_ms"] / t_ours["median_ms"], "same_top_n": True}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--compounds", type=int, default=100000)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "targets_bench.json")
    args = p.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        build = build_store(store, args.genes, args.compounds)

        def custom():  # fresh random weights every call: no caching can help
            w = dict(zip(EVIDENCE_TYPES, rng.uniform(0.1, 1.0, len(EVIDENCE_TYPES)).round(3)))
            return ranked_targets(store, top=50, weights=w)

        rows = {
            "top-50, custom weights (warm: matrix cached)": timed(custom, args.repeats),
            "top-50, custom weights (cold: DB read each call)": timed(custom, args.repeats, before=clear_cache),
            "top-50, default weights": timed(lambda: ranked_targets(store, top=50), args.repeats),
            "top-50, custom weights + min_score + has_compound": timed(
                lambda: ranked_targets(store, top=50, weights={"rna_expression": 1, "copy_number": 0.5},
                                       min_score=0.1, has_compound=True), args.repeats),
            "open + close the results DB read-only (part of each query)": timed(
                lambda: connect(store, read_only=True).close(), args.repeats),
            "explain one target": timed(lambda: explain_target(store, "GENE00042"), args.repeats),
            "similar (top 10 of all compounds)": timed(
                lambda: similar_compounds(store, "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1", top=10),
                max(5, args.repeats // 3)),
        }
        page = custom()
        assert len(page["rows"]) == 50 and page["total"] == args.genes
        peers = compare_duckdb(store, args.repeats)
    print(f"store: {args.genes} genes x {args.compounds} compounds ({build['n_links']} links, "
          f"{build['n_evidence_rows']} evidence rows); build: molecules {build['molecules_s']:.1f} s, "
          f"fingerprints {build['fingerprints_s']:.1f} s, DB write {build['write_s']:.1f} s")
    print(f"{'query':<60} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>8}")
    for name, r in rows.items():
        print(f"{name:<60} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['cpu_median_ms']:>8.1f}")
    print(f"{'peer (ratio = DuckDB ms / ours ms; > 1: ours faster)':<60} {'ours ms':>10} {'DuckDB ms':>10} {'ratio':>6}")
    for name, r in peers.items():
        print(f"{name:<60} {r['ours']:>10.2f} {r['baseline']:>10.2f} {r['ratio']:>6.1f}")
    print(f"(host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; wall > CPU means the host is busy)")
    args.out.write_text(json.dumps({"genes": args.genes, "compounds": args.compounds, "build": build,
                                    "queries": rows, "peers": peers, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
