"""Ablation on a generated cohort with confounders: no evidence type alone recovers the planted targets,
the default combination does (recall at k = number of planted targets).

Cheapest honest path: the generator writes only the evidence inputs (GDC omics, compounds and three
spatial samples with their slides); the stage functions compute every evidence row from those files. Model
attribution comes from the run's expression-only diagnosis model (flows.stages.fusion_experiments.
model_evidence, with the run config's defaults), which needs nothing but the expression and the diagnoses.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flows.catalog.schema import load_catalog
from flows.config import RunConfig
from flows.results.ranking import EVIDENCE_TYPES, TRACTABILITY, load_scoring_config, rank_targets
from flows.stages import evidence_rows as er
from flows.stages.bulk_omics import expression_features, read_bulk_omics
from flows.stages.evidence import cohort_evidence_rows, compound_inputs, type_score_matrix
from flows.stages.fusion_experiments import model_evidence
from flows.synthetic.cohort import CohortConfig
from flows.synthetic.decoys import arm, cytobands_for
from flows.synthetic.evidence_cohort import generate_evidence_cohort
from fusion.train import seeded


class MeanColourEncoder:
    """Tile 'features' = mean RGB; spatial evidence reads only the tiles' coordinates and hematoxylin density."""

    def encode(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return tiles.reshape(len(tiles), -1, 3).mean(axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from flows.stages.pathology import extract_features, plan_slide
    from flows.stages.spatial import process_spatial_sample

    root = tmp_path_factory.mktemp("ablation")
    data, work = root / "data", root / "work"
    work.mkdir()
    truth = generate_evidence_cohort(data, CohortConfig(n_patients=48, seed=5, slide_size_px=1024, spot_pitch_px=64),
                                     max_spatial=3)
    catalog = load_catalog(data / "data_catalog.yaml")
    samples = []
    for h5ad in sorted((data / "spatial").glob("*.h5ad")):
        pid = h5ad.stem[:12]
        plan = plan_slide(pid, data / "slides" / f"{pid}-01Z-00-DX1.tiff", tile_size=64, target_mpp=1.0,
                          min_tissue=0.5, seed=0)
        features = extract_features(plan, MeanColourEncoder(), work / f"{pid}.h5")
        samples.append(process_spatial_sample(pid, h5ad, features, work / f"{pid}.h5ad", {"seed": 0}))
    scoring = load_scoring_config()
    bulk = read_bulk_omics(catalog)
    cfg = RunConfig().to_dict()
    with seeded(cfg["seed"]):  # as flows.tasks.fusion_task calls it
        model = model_evidence({"expression": expression_features(bulk, cfg["n_hvg"])}, {},
                               bulk.clinical["primary_diagnosis"].dropna(), cfg)
    rows = cohort_evidence_rows(catalog, bulk, samples, model, scoring)
    comp = compound_inputs(catalog)
    rows = pd.concat([rows, er.tractability_rows(comp.links, scoring, comp.source_rows, comp.path)],
                     ignore_index=True)
    matrix = type_score_matrix(rows, list(bulk.expression.var_names))
    return {"data": data, "truth": truth, "rows": rows, "matrix": matrix, "scoring": scoring,
            "copy_number": bulk.copy_number,
            "n_spatial": len(samples)}


def _recall_at_k(ranked_genes: list[str], planted: list[str]) -> float:
    k = len(planted)
    return len(set(ranked_genes[:k]) & set(planted)) / k


def ablation_table(matrix: pd.DataFrame, weights: dict[str, float], planted: list[str]) -> pd.DataFrame:
    """recall@k ranking by each evidence type alone (tractability too) and by the weighted combination."""
    out = []
    for t in [*EVIDENCE_TYPES, TRACTABILITY]:
        if not (matrix[t] > 0).any():
            out.append({"ranking": f"{t} alone", "recall_at_k": np.nan, "top_k": "(no evidence rows)"})
            continue
        if t == TRACTABILITY:  # kept out of the association score: rank on its own column
            order = matrix[t].sort_values(ascending=False, kind="mergesort").index.tolist()
        else:
            order = rank_targets(matrix[list(EVIDENCE_TYPES)], {t: 1.0})["gene"].tolist()
        out.append({"ranking": f"{t} alone", "recall_at_k": _recall_at_k(order, planted),
                    "top_k": ", ".join(order[: len(planted)])})
    combined = rank_targets(matrix[list(EVIDENCE_TYPES)], weights)["gene"].tolist()
    out.append({"ranking": "default weighted combination", "recall_at_k": _recall_at_k(combined, planted),
                "top_k": ", ".join(combined[: len(planted)])})
    return pd.DataFrame(out)


def test_no_single_evidence_type_recovers_the_planted_targets_but_the_combination_does(cohort):
    planted = cohort["truth"]["targets"]
    table = ablation_table(cohort["matrix"], cohort["scoring"].weights, planted)
    print(f"\nablation (k = {len(planted)} planted: {', '.join(planted)}; 48 patients, "
          f"{cohort['n_spatial']} spatial samples)\n" + table.to_string(index=False))
    single = table.iloc[:-1].dropna(subset=["recall_at_k"])
    assert len(single) == len(EVIDENCE_TYPES) + 1  # every evidence type, plus tractability
    assert (single["recall_at_k"] < 1.0).all(), table
    assert table.iloc[-1]["recall_at_k"] == 1.0, table


def test_each_decoy_class_leads_its_own_evidence_type(cohort):
    decoys, m = cohort["truth"]["decoys"], cohort["matrix"]
    planted = cohort["truth"]["targets"]
    lead = {"over_expressed": "rna_expression", "co_amplified_passenger": "copy_number",
            "prognostic_not_over_expressed": "survival_association",
            "spatial_tumour_region": "spatial_tumour_region", "frequently_mutated_long": "somatic_mutation",
            "well_drugged": TRACTABILITY}
    for cls, etype in lead.items():
        best_planted = m.loc[planted, etype].max() if etype != TRACTABILITY else np.sort(m.loc[planted, etype])[0]
        assert (m.loc[decoys[cls], etype] > best_planted).any(), (cls, m.loc[decoys[cls] + planted, etype])
    # housekeeping genes: the most expressed, yet a small fold change scores low on rna_expression
    assert m.loc[decoys["housekeeping"], "rna_expression"].max() < m.loc[planted, "rna_expression"].min() - 0.3


def test_passengers_share_their_targets_arm_and_amplifications(cohort):
    truth, calls = cohort["truth"], cohort["copy_number"]  # genes x tumours, read from the gdc-client download
    assert truth["decoys"]["co_amplified_passenger"]
    band = dict(zip(calls.index, cytobands_for(list(calls.index))))
    for passenger, target in truth["passenger_of"].items():
        assert arm(band[passenger]) == arm(band[target])
        amp_t, amp_p = calls.loc[target] >= 1, calls.loc[passenger] >= 1
        assert (amp_p[amp_t]).mean() > 0.8 and amp_p.mean() > amp_t.mean() - 0.05


def test_some_planted_targets_have_only_moderately_potent_compounds(cohort):
    rows = cohort["rows"]
    trac = rows.loc[rows["evidence_type"] == TRACTABILITY].copy()
    trac["pchembl"] = trac["raw_value"]
    best = trac.groupby("gene")["pchembl"].max()
    truth = cohort["truth"]
    for g in truth["moderate_potency_targets"]:
        assert 6.0 <= best[g] < 7.0
    assert all(best[g] >= 7.0 for g in truth["decoys"]["well_drugged"])
    # every row of a compound link points back to its rows of the compounds file
    assert trac["row_ref"].str.contains(r"compounds\.tsv: data rows [0-9]").all()


def test_every_evidence_row_is_traceable(cohort):
    rows = cohort["rows"]
    assert set(rows["evidence_type"]) == {*EVIDENCE_TYPES, TRACTABILITY}
    assert rows["score"].between(0.0, 1.0).all()
    assert rows["row_ref"].str.len().gt(0).all()
    planted = cohort["truth"]["targets"][0]
    mut = rows.loc[(rows["gene"] == planted) & (rows["evidence_type"] == "somatic_mutation")]
    if len(mut):  # each per-aliquot MAF and data rows named in the reference are the gene's mutations
        for part in mut["row_ref"].iloc[0].split("; "):
            file, rows_txt = part.split(": data rows ")
            maf = pd.read_csv(file, sep="\t", comment="#", low_memory=False)
            listed = [int(x) for x in rows_txt.split(" (")[0].split(", ")]
            assert (maf.loc[[r - 1 for r in listed], "Hugo_Symbol"] == planted).all()
    spatial = rows.loc[rows["evidence_type"] == "spatial_tumour_region"]
    assert spatial.groupby("gene").size().max() == cohort["n_spatial"]  # one row per spatial sample
    assert json.loads(spatial["details_json"].iloc[0])["patient_id"].startswith("TCGA-")
