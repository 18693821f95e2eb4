"""Stage: cohort inputs -> traceable evidence rows -> per-type scores -> ranked targets -> results DB."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from flows.catalog.schema import Catalog
from flows.config import RunConfig, run_code_version
from flows.results.ranking import (EVIDENCE_TYPES, TRACTABILITY, ScoringConfig, harmonic_sums, load_scoring_config,
                           rank_targets, validate_weights)
from flows.results.db import write_run
from flows.skipped import Skipped, as_dicts
from flows.stages import evidence_rows as er
from flows.stages.bulk_omics import BulkOmics
from flows.store.artifacts import ArtifactStore, atomic_path


@dataclass
class CompoundInputs:
    """The compound library with descriptors, its target links, and where each link's rows came from."""

    compounds: pd.DataFrame
    links: pd.DataFrame
    errors: list[str]
    source_rows: dict[tuple[str, str], list[int]]
    path: Path | None
    model_cards: list[dict[str, Any]] = field(default_factory=list)  # cards of the models behind predicted links


def _specs(scoring: ScoringConfig, evidence_type: str) -> dict[str, Any]:
    return {n: s for n, s in scoring.sources.items() if s.type == evidence_type}


def cohort_evidence_rows(catalog: Catalog, bulk: BulkOmics, spatial_samples: list[dict[str, Any]],
                         model_evidence: pd.Series | None, scoring: ScoringConfig,
                         model_ref: str = "expression-only diagnosis model") -> pd.DataFrame:
    """Every association evidence row of the cohort (omics, survival, copy number, mutations, spatial, model)."""
    from omics.de import differential_expression
    from omics.survival import cox_univariate

    parts = []
    genes = list(bulk.expression.var_names)
    tumours = list(bulk.tumour.obs_names)
    expr_src = catalog.by_modality("expression")
    obs = bulk.expression.obs
    for name, spec in _specs(scoring, "rna_expression").items():
        if bool(obs["is_normal"].sum() >= 2) and bool(obs["is_tumour"].sum() >= 2):
            de = differential_expression(bulk.expression, group_key="is_tumour")
            parts.append(er.rna_expression_rows(de, spec, expr_src.sample_sheet or expr_src.path,
                                                int(obs["is_tumour"].sum()), int(obs["is_normal"].sum())))
    patients = [p for p in tumours if p in bulk.clinical.index]
    clin = bulk.clinical.loc[patients].dropna(subset=["os_time_days", "os_event"]) if patients else None
    for name, spec in _specs(scoring, "survival_association").items():
        if clin is not None and len(clin) >= 10 and clin["os_event"].sum() > 0:
            tum = bulk.tumour[list(clin.index)]
            x = tum.X.toarray() if hasattr(tum.X, "toarray") else np.asarray(tum.X)
            cox = cox_univariate(x, clin["os_time_days"].to_numpy(float), clin["os_event"].to_numpy(int),
                                 genes=list(tum.var_names))
            parts.append(er.survival_rows(cox, spec, catalog.by_modality("clinical").path, len(clin),
                                          int(clin["os_event"].sum())))
    cn_specs = _specs(scoring, "copy_number")
    if bulk.copy_number is not None and cn_specs:
        parts.append(er.copy_number_rows(bulk.copy_number, tumours, catalog.by_modality("copy_number").path,
                                         cn_specs))
    for name, spec in _specs(scoring, "somatic_mutation").items():
        if bulk.maf is not None:
            parts.append(er.mutation_rows(bulk.maf, tumours, genes, catalog.by_modality("mutations").path, spec))
    for name, spec in _specs(scoring, "spatial_tumour_region").items():
        parts.append(er.spatial_rows(spatial_samples, spec))
    for name, spec in _specs(scoring, "model_attribution").items():
        if model_evidence is not None and not model_evidence.empty:
            parts.append(er.model_rows(model_evidence, spec, model_ref))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=er.ROW_COLUMNS)


def compound_inputs(catalog: Catalog) -> CompoundInputs:
    """Compounds (standardised, with descriptors), target links and the source rows of every link
    (a compound table or an SD file; bad records reported, not fatal)."""
    from molecules.io import read_compounds, read_sdf
    from molecules.links import target_compound_links
    from molecules.properties import add_descriptors
    from molecules.similarity import packed_fingerprints

    src = catalog.by_modality("compounds")
    if src is None:
        return CompoundInputs(pd.DataFrame(), pd.DataFrame(), [], {}, None)
    table, errors = (read_sdf(src.path, id_field="compound_id") if src.format == "sdf"
                     else read_compounds(src.path))
    if table.empty:
        return CompoundInputs(pd.DataFrame(), pd.DataFrame(), errors, {}, src.path)
    has_activity = {"target_gene", "pchembl", "activity_type"} <= set(table.columns)
    links = target_compound_links(table) if has_activity else pd.DataFrame()
    if not links.empty:
        links = links.assign(link_type="measured", model_version="")
    source_rows = ({k: list(v) for k, v in table.groupby(["target_gene", "compound_id"])["source_row"]}
                   if has_activity and "source_row" in table.columns else {})
    comp = add_descriptors(table.drop_duplicates("compound_id"))
    prop_cols = [c for c in ("mw", "clogp", "tpsa", "hbd", "hba", "rotatable_bonds", "qed", "lipinski_violations")
                 if c in comp.columns]
    comp = comp.assign(
        name=comp["name"] if "name" in comp.columns else None,
        properties_json=[json.dumps({c: float(r[c]) for c in prop_cols}) for _, r in comp.iterrows()],
        morgan_fp=[bytes(fp) for fp in packed_fingerprints(list(comp["canonical_smiles"]))])
    return CompoundInputs(comp, links, errors, source_rows, src.path)


def type_score_matrix(rows: pd.DataFrame, genes: list[str] | None = None) -> pd.DataFrame:
    """Genes x evidence types (incl. tractability) of per-type harmonic sums; missing evidence = 0."""
    hs = harmonic_sums(rows)
    m = hs.pivot(index="gene", columns="evidence_type", values="score")
    if genes is not None:
        m = m.reindex(sorted(set(genes) | set(m.index)))
    return m.reindex(columns=[*EVIDENCE_TYPES, TRACTABILITY]).fillna(0.0).rename_axis("gene")


def score_targets(rows: pd.DataFrame, scoring: ScoringConfig, weights: dict[str, float] | None = None,
                  genes: list[str] | None = None) -> pd.DataFrame:
    """Ranked targets (gene, rank, score, per-type scores, tractability) from evidence rows."""
    m = type_score_matrix(rows, genes)
    ranked = rank_targets(m[list(EVIDENCE_TYPES)], weights or scoring.weights)
    return ranked.assign(tractability=m[TRACTABILITY].reindex(ranked["gene"]).to_numpy())


def run_scoring(config: RunConfig) -> ScoringConfig:
    """The versioned scoring config with the run config's evidence weights."""
    base = load_scoring_config()
    return ScoringConfig(version=base.version, weights=validate_weights(dict(config.ranking_weights),
                                                                        "run config 'ranking_weights'"),
                         sources=base.sources, tractability=base.tractability, active_pchembl=base.active_pchembl)


def rank_and_link(*, catalog: Catalog, config: RunConfig, bulk: BulkOmics, spatial_samples: list[dict[str, Any]],
                  fusion_out: dict[str, Any], model_ref: str = "fusion/experiments.pkl") -> dict[str, Any]:
    """Evidence rows -> Open Targets-style scores -> ranked targets, with the compound inputs behind the
    tractability: {'ranked', 'rows', 'comp', 'scoring'}."""
    scoring = run_scoring(config)
    rows = cohort_evidence_rows(catalog, bulk, spatial_samples, fusion_out.get("model_evidence"), scoring,
                                model_ref=f"{model_ref}: model_evidence, expression-only diagnosis model")
    comp = compound_inputs(catalog)
    rows = pd.concat([rows, er.tractability_rows(comp.links, scoring, comp.source_rows, comp.path)],
                     ignore_index=True)
    ranked = score_targets(rows, scoring, genes=list(bulk.expression.var_names))
    comp, rows, ranked = _add_predicted_links(comp, rows, ranked, scoring, config, list(bulk.expression.var_names))
    return {"ranked": ranked, "rows": rows, "comp": comp, "scoring": scoring}


def empty_ranking(catalog: Catalog, config: RunConfig) -> dict[str, Any]:
    """The ranking of a cohort without expression: no target, the compound library still recorded."""
    scoring = run_scoring(config)
    rows = pd.DataFrame(columns=er.ROW_COLUMNS)
    ranked = pd.DataFrame({"gene": pd.Series(dtype=str), "rank": pd.Series(dtype="int64"),
                           "score": pd.Series(dtype=float),
                           **{t: pd.Series(dtype=float) for t in (*EVIDENCE_TYPES, TRACTABILITY)}})
    return {"ranked": ranked, "rows": rows, "comp": compound_inputs(catalog), "scoring": scoring}


def _add_predicted_links(comp: CompoundInputs, rows: pd.DataFrame, ranked: pd.DataFrame, scoring: ScoringConfig,
                         config: RunConfig, genes: list[str]) -> tuple[CompoundInputs, pd.DataFrame, pd.DataFrame]:
    """Top-ranked targets without a measured potent compound get activity-model predictions (flagged
    'predicted' with the model version); tractability is rescored, the disease score is unchanged."""
    import dataclasses

    from flows.stages.activity_links import predicted_links, targets_needing_predictions

    need = targets_needing_predictions(comp.links, list(ranked["gene"]), config.predicted_links_top,
                                       scoring.active_pchembl)
    if not need or config.activity_steps <= 0:
        return comp, rows, ranked
    pred = predicted_links(comp.compounds, comp.links, need, scoring.active_pchembl, config.compounds_per_target,
                           config.activity_steps, config.seed)
    if pred.empty:
        return comp, rows, ranked
    rows = pd.concat([rows, er.tractability_rows(pred, scoring, {}, comp.path)], ignore_index=True)
    comp = dataclasses.replace(comp, links=pd.concat([comp.links, pred], ignore_index=True),
                               model_cards=[pred.attrs["model_card"]])
    return comp, rows, score_targets(rows, scoring, genes=genes)


def record_run(*, catalog: Catalog, store: ArtifactStore, config: RunConfig, ranking: dict[str, Any],
               fusion_out: dict[str, Any], run_id: str, started: datetime, inputs: dict[str, str],
               skipped: list[Skipped], timings: dict[str, float], log: Callable[[str], None],
               stages_skipped: list[str] | None = None) -> dict[str, Any]:
    """Write the ranking, the evidence rows, the run record and the results DB rows of one run; the summary."""
    ranked, rows, comp, scoring = ranking["ranked"], ranking["rows"], ranking["comp"], ranking["scoring"]
    skipped = as_dicts(skipped + [Skipped("compounds", str(comp.path), e) for e in comp.errors])
    store.write_parquet("targets/ranking.parquet", ranked)
    store.write_parquet("targets/evidence_rows.parquet", rows)
    experiments = fusion_out["experiments"]
    metrics = {
        "experiments": {task: {r["name"]: {"mean": r["mean"], "std": r["std"], "metric": r["metric"]}
                               for r in grp.to_dict("records")}
                        for task, grp in experiments.groupby("task")},
        "n_patients_fusion": fusion_out["n_patients"], "modality_counts": fusion_out["modality_counts"],
        "timings_s": timings, "n_skipped": len(skipped),
        "top_targets": ranked["gene"].head(10).tolist(), "scoring_version": scoring.version,
        "stages_skipped": list(stages_skipped or []),
    }
    finished = datetime.now(timezone.utc)
    run = {"run_id": run_id, "cohort": catalog.cohort, "started_utc": started.isoformat(),
           "finished_utc": finished.isoformat(), "catalog": str(catalog.file), "config": config.to_dict(),
           "inputs_sha256": inputs, "code_version": run_code_version(), "metrics": metrics, "skipped": skipped}
    with atomic_path(store.path(f"runs/{run_id}.json")) as tmp:
        tmp.write_text(json.dumps(run, indent=1, default=float))
    write_run(store.root, run=run, targets=ranked, compounds=comp.compounds, links=comp.links,
              experiments=experiments, evidence=rows, scoring=scoring.to_dict(), model_cards=comp.model_cards)
    for task, grp in experiments.groupby("task"):
        best_single = grp.loc[grp["kind"] == "single"].sort_values("mean").tail(1)
        best_fusion = grp.loc[grp["kind"] == "fusion"].sort_values("mean").tail(1)
        if len(best_single) and len(best_fusion):
            log(f"[fusion] {task}: best fusion {best_fusion['name'].iloc[0]} {best_fusion['metric'].iloc[0]}="
                f"{best_fusion['mean'].iloc[0]:.3f} vs best single {best_single['name'].iloc[0]}="
                f"{best_single['mean'].iloc[0]:.3f}")
    if len(ranked):
        log(f"[targets] top 5 (scoring {scoring.version}): {', '.join(ranked['gene'].head(5))}")
    return {"run_id": run_id, "skipped": skipped, "metrics": metrics}
