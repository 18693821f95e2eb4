"""The targets section of a patient report: the run's top-ranked targets with the patient's own evidence
(expression z-score, copy number, mutations, spatial enrichment)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_TARGETS = 10  # ranked targets listed with the patient's evidence


def patient_evidence(ps: Any, pid: str, genes: list[str]) -> dict[str, dict[str, Any]]:
    """Per gene, the patient's own evidence: ``expression_z`` (its primary tumour's log2(CPM+1) as a z-score
    over the cohort's tumours, sample standard deviation), ``copy_number`` (its gene-level call, -2..2),
    ``mutation`` (its non-silent MAF records as 'Variant_Classification HGVSp_Short'; [] when none, None
    without a MAF for the cohort) and ``spatial_enrichment`` (log2 fold change of the gene in its spatial tumour
    region). None where the patient or the cohort lacks that data."""
    bulk = ps.bulk
    out = {g: {"expression_z": None, "copy_number": None, "mutation": None, "spatial_enrichment": None}
           for g in genes}
    tum = getattr(bulk, "tumour", None)
    if tum is not None and pid in tum.obs_names:
        have = [g for g in genes if g in tum.var_names]
        x = tum[:, have].X
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=float)
        sd = x.std(axis=0, ddof=1)
        z = (x[list(tum.obs_names).index(pid)] - x.mean(axis=0)) / np.where(sd > 0, sd, np.nan)
        for g, v in zip(have, z):
            out[g]["expression_z"] = float(v)
    cn = getattr(bulk, "copy_number", None)
    if cn is not None and pid in cn.columns:
        for g in genes:
            if g in cn.index and pd.notna(cn.loc[g, pid]):
                out[g]["copy_number"] = int(cn.loc[g, pid])
    maf = getattr(bulk, "maf", None)
    if maf is not None:
        from omics.gdc import NON_SILENT_CLASSES

        mine = maf.loc[(maf["patient_id"] == pid) & maf["Variant_Classification"].isin(NON_SILENT_CLASSES)]
        prot = mine["HGVSp_Short"] if "HGVSp_Short" in mine else pd.Series("", index=mine.index)
        for g in genes:
            hit = mine["Hugo_Symbol"] == g
            out[g]["mutation"] = [f"{c} {p}" if isinstance(p, str) and p else str(c)
                                  for c, p in zip(mine.loc[hit, "Variant_Classification"], prot[hit])]
    if pid in ps.spatial:
        from flows.store.artifacts import load_pickle

        enr = load_pickle(ps.spatial[pid] / "result.pkl").get("enrichment")
        if enr is not None:
            for g in genes:
                if g in enr.index:
                    out[g]["spatial_enrichment"] = float(enr.loc[g, "log2_fold_change"])
    return out


def target_section(ps: Any, pid: str | None, top: int = TOP_TARGETS) -> list[dict[str, Any]]:
    """The run's top-ranked targets (gene, rank, score) with the patient's own evidence (all None for a
    patient the store has no omics of, e.g. a new patient)."""
    ranked = ps.ranking.sort_values("rank").head(top)
    genes = [str(g) for g in ranked["gene"]]
    ev = patient_evidence(ps, pid, genes) if pid is not None else {
        g: {"expression_z": None, "copy_number": None, "mutation": None, "spatial_enrichment": None} for g in genes}
    return [{"gene": g, "rank": int(r), "score": float(s), "evidence": ev[g]}
            for g, r, s in zip(genes, ranked["rank"], ranked["score"])]
