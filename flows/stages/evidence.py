"""Stage: per-gene evidence -> ranked targets -> linked compounds -> results DB and run record."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd

from flows.catalog import Catalog
from flows.config import RunConfig
from flows.ranking import RankingConfig, rank_targets
from flows.results_db import write_run
from flows.stages.bulk_omics import BulkOmics, omics_evidence
from flows.store import ArtifactStore, atomic_path


def spatial_evidence(samples: list[dict[str, Any]]) -> pd.Series:
    """Per gene: mean enrichment t of tumour-region spots (under cellular histology) across samples."""
    tables = [s["enrichment"]["t"] for s in samples if s.get("enrichment") is not None]
    if not tables:
        return pd.Series(dtype=float, name="spatial")
    return pd.concat(tables, axis=1).mean(axis=1).rename("spatial")


def compound_tables(catalog: Catalog) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Compounds (standardised, with descriptors) and target-compound links from the catalog."""
    from molecules.io import read_compound_table
    from molecules.links import target_compound_links
    from molecules.properties import add_descriptors

    src = catalog.by_modality("compounds")
    if src is None:
        return pd.DataFrame(), pd.DataFrame(), []
    table, errors = read_compound_table(src.path)
    links = target_compound_links(table)
    comp = add_descriptors(table.drop_duplicates("compound_id"))
    prop_cols = [c for c in ("mw", "clogp", "tpsa", "hbd", "hba", "rotatable_bonds", "qed", "lipinski_violations")
                 if c in comp.columns]
    comp = comp.assign(
        name=comp["name"] if "name" in comp.columns else None,
        properties_json=[json.dumps({c: float(r[c]) for c in prop_cols}) for _, r in comp.iterrows()])
    return comp, links, errors


def rank_and_link(*, catalog: Catalog, config: RunConfig, bulk: BulkOmics, spatial_samples: list[dict[str, Any]],
                  fusion_out: dict[str, Any]) -> dict[str, Any]:
    """Evidence table -> ranked targets -> linked compounds: {'ranked', 'compounds', 'links', 'errors'}."""
    from molecules.links import summarise_target_chemistry

    ev = omics_evidence(bulk)
    sp = spatial_evidence(spatial_samples)
    if not sp.empty:
        ev["spatial"] = sp.reindex(ev.index)
    if not fusion_out["model_evidence"].empty:
        ev["model"] = fusion_out["model_evidence"].reindex(ev.index)
    compounds, links, comp_errors = compound_tables(catalog)
    if not links.empty:
        chem = summarise_target_chemistry(links)
        ev["tractability"] = chem["best_pchembl"].reindex(ev.index)
    ranked = rank_targets(ev, RankingConfig(weights=config.ranking_weights))
    link_rows = pd.DataFrame()
    if not links.empty:
        top = set(ranked["gene"])
        link_rows = (links.loc[links["target_gene"].isin(top)]
                     .sort_values(["target_gene", "pchembl"], ascending=[True, False])
                     .groupby("target_gene").head(config.compounds_per_target)
                     .rename(columns={"target_gene": "gene"}))
    return {"ranked": ranked, "compounds": compounds, "links": link_rows, "errors": comp_errors}


def assemble_results(*, catalog: Catalog, store: ArtifactStore, config: RunConfig, bulk: BulkOmics,
                     spatial_samples: list[dict[str, Any]], fusion_out: dict[str, Any], run_id: str,
                     started: datetime, inputs: dict[str, str], skipped: list[dict[str, str]],
                     timings: dict[str, float], log: Callable[[str], None]) -> dict[str, Any]:
    """Build the evidence table, rank targets, link compounds and write everything to the results DB."""
    ranking = rank_and_link(catalog=catalog, config=config, bulk=bulk, spatial_samples=spatial_samples,
                            fusion_out=fusion_out)
    return record_run(catalog=catalog, store=store, config=config, ranking=ranking, fusion_out=fusion_out,
                      run_id=run_id, started=started, inputs=inputs, skipped=skipped, timings=timings, log=log)


def record_run(*, catalog: Catalog, store: ArtifactStore, config: RunConfig, ranking: dict[str, Any],
               fusion_out: dict[str, Any], run_id: str, started: datetime, inputs: dict[str, str],
               skipped: list[dict[str, str]], timings: dict[str, float], log: Callable[[str], None]) -> dict[str, Any]:
    """Write the ranking, the run record and the results DB rows of one run; the run summary."""
    ranked, compounds, link_rows = ranking["ranked"], ranking["compounds"], ranking["links"]
    skipped = skipped + [{"source": "compounds", "file": str(catalog.by_modality("compounds").path), "error": e}
                         for e in ranking["errors"]]
    store.write_parquet("targets/ranking.parquet", ranked)
    experiments = fusion_out["experiments"]
    metrics = {
        "experiments": {task: {r["name"]: {"mean": r["mean"], "std": r["std"], "metric": r["metric"]}
                               for r in grp.to_dict("records")}
                        for task, grp in experiments.groupby("task")},
        "n_patients_fusion": fusion_out["n_patients"], "modality_counts": fusion_out["modality_counts"],
        "timings_s": timings, "n_skipped": len(skipped),
        "top_targets": ranked["gene"].head(10).tolist(),
    }
    finished = datetime.now(timezone.utc)
    run = {"run_id": run_id, "cohort": catalog.cohort, "started_utc": started.isoformat(),
           "finished_utc": finished.isoformat(), "catalog": str(catalog.file), "config": config.to_dict(),
           "inputs_sha256": inputs, "metrics": metrics, "skipped": skipped}
    with atomic_path(store.path(f"runs/{run_id}.json")) as tmp:
        tmp.write_text(json.dumps(run, indent=1, default=float))
    write_run(store.root, run=run, targets=ranked, compounds=compounds, links=link_rows, experiments=experiments)
    for task, grp in experiments.groupby("task"):
        best_single = grp.loc[grp["kind"] == "single"].sort_values("mean").tail(1)
        best_fusion = grp.loc[grp["kind"] == "fusion"].sort_values("mean").tail(1)
        if len(best_single) and len(best_fusion):
            log(f"[fusion] {task}: best fusion {best_fusion['name'].iloc[0]} {best_fusion['metric'].iloc[0]}="
                f"{best_fusion['mean'].iloc[0]:.3f} vs best single {best_single['name'].iloc[0]}="
                f"{best_single['mean'].iloc[0]:.3f}")
    log(f"[targets] top 5: {', '.join(ranked['gene'].head(5))}")
    return {"run_id": run_id, "skipped": skipped, "metrics": metrics}
