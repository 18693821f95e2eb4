"""Evidence rows: one row per (gene, evidence type, source[, sample / compound]) with its raw statistic,
its 0..1 score and a reference to the input rows behind it (file, row numbers, sample)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.results.ranking import TRACTABILITY, ScoringConfig, SourceSpec, score_values

ROW_COLUMNS = ("gene", "evidence_type", "source", "statistic", "raw_value", "score", "row_ref", "details_json")
MAX_LISTED_ROWS = 25  # row references list at most this many input rows, then a count


def _rows(genes: Any, spec: SourceSpec, raw: np.ndarray, refs: list[str] | str,
          details: list[dict[str, Any]] | None = None, fdr: np.ndarray | None = None) -> pd.DataFrame:
    genes = list(genes)
    raw = np.asarray(raw, dtype=float)
    refs = [refs] * len(genes) if isinstance(refs, str) else list(refs)
    details = details or [{} for _ in genes]
    return pd.DataFrame({
        "gene": genes, "evidence_type": spec.type, "source": spec.name, "statistic": spec.statistic,
        "raw_value": raw, "score": score_values(raw, spec, fdr), "row_ref": refs,
        "details_json": [json.dumps(d, default=float, sort_keys=True) for d in details]})


def _listed(rows: list[int]) -> str:
    head = ", ".join(str(r) for r in rows[:MAX_LISTED_ROWS])
    return head + (f" (+{len(rows) - MAX_LISTED_ROWS} more)" if len(rows) > MAX_LISTED_ROWS else "")


def rna_expression_rows(de: pd.DataFrame, spec: SourceSpec, sample_sheet: Path, n_tumour: int,
                        n_normal: int) -> pd.DataFrame:
    """Tumour-vs-normal differential expression (``omics.de.differential_expression`` table) per gene."""
    ref = f"{sample_sheet}: {n_tumour} tumour vs {n_normal} normal STAR-count files, gene row by gene_name"
    details = [{"t": float(t), "fdr": float(q), "mean_tumour_log2cpm": float(a), "mean_normal_log2cpm": float(b)}
               for t, q, a, b in zip(de["t"], de["fdr"], de["mean_tumour"], de["mean_normal"])]
    return _rows(de.index, spec, de["log2_fold_change"].to_numpy(), ref, details, fdr=de["fdr"].to_numpy())


def survival_rows(cox: pd.DataFrame, spec: SourceSpec, clinical: Path, n_patients: int,
                  n_events: int) -> pd.DataFrame:
    """Univariate Cox fits (``omics.survival.cox_univariate`` table) of tumour expression per gene."""
    ref = f"{clinical}: {n_patients} patients ({n_events} deaths) x primary-tumour expression"
    details = [{"hazard_ratio_per_log2cpm": float(h), "p_value": float(p), "fdr": float(q)}
               for h, p, q in zip(cox["hazard_ratio"], cox["p_value"], cox["fdr"])]
    return _rows(cox.index, spec, cox["z"].to_numpy(), ref, details, fdr=cox["fdr"].to_numpy())


def copy_number_rows(cn: pd.DataFrame, tumours: list[str], cn_file: Path,
                     specs: dict[str, SourceSpec]) -> pd.DataFrame:
    """Gain (call >= 1) and high-level amplification (call == 2) frequencies over the tumours."""
    cols = [p for p in tumours if p in cn.columns]
    x = cn[cols].to_numpy()
    if Path(cn_file).is_dir():  # a gdc-client download: one gene-level file per aliquot, keyed by sample
        refs = [f"{cn_file}: gene-level copy number files ({g}), {len(cols)} tumours" for g in cn.index]
    else:  # a GISTIC table: the gene's row and cytoband
        meta = pd.read_csv(cn_file, sep="\t", usecols=lambda c: c in ("Gene Symbol", "Cytoband"), dtype=str)
        first = ~meta["Gene Symbol"].duplicated()
        row_of = dict(zip(meta["Gene Symbol"][first], np.flatnonzero(first.to_numpy()) + 1))
        band_of = dict(zip(meta["Gene Symbol"][first], meta.get("Cytoband", pd.Series("", index=meta.index))[first]))
        refs = [f"{cn_file}: row {row_of.get(g, '?')} ({g}, cytoband {band_of.get(g, '?')}), {len(cols)} tumours"
                for g in cn.index]
    out = []
    for name, calls in (("amplification_frequency", x >= 1), ("high_level_amplification_frequency", x == 2)):
        if name in specs:
            frac = calls.mean(axis=1) if cols else np.zeros(len(cn))
            out.append(_rows(cn.index, specs[name], frac, refs, [{"n_tumours": int(n)} for n in calls.sum(1)]))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)


def mutation_rows(maf: pd.DataFrame, tumours: list[str], genes: list[str], maf_file: Path,
                  spec: SourceSpec) -> pd.DataFrame:
    """Fraction of tumours with a non-silent mutation per gene; refs list the MAF data rows (1-based)."""
    from omics.gdc import NON_SILENT_CLASSES

    hits = maf.loc[maf["Variant_Classification"].isin(NON_SILENT_CLASSES) & maf["patient_id"].isin(tumours)
                   & maf["Hugo_Symbol"].isin(genes)]
    n_mut = hits.groupby("Hugo_Symbol")["patient_id"].nunique()
    mutated = n_mut.index.tolist()
    frac = n_mut.to_numpy() / max(len(tumours), 1)
    if "source_file" in hits.columns:  # merged per-aliquot MAFs: each file and its own data rows
        refs = ["; ".join(f"{f}: data rows {_listed(list(d['source_row'].astype(int)))}"
                          for f, d in hits.loc[hits["Hugo_Symbol"] == g].groupby("source_file")) for g in mutated]
    else:
        rows_of = hits.groupby("Hugo_Symbol").apply(lambda d: [int(i) + 1 for i in d.index], include_groups=False)
        refs = [f"{maf_file}: data rows {_listed(rows_of[g])}" for g in mutated]
    return _rows(mutated, spec, frac, refs, [{"n_tumours_mutated": int(n)} for n in n_mut])


def spatial_rows(samples: list[dict[str, Any]], spec: SourceSpec) -> pd.DataFrame:
    """Per spatial sample with a tumour region: the gene's region enrichment (one row per sample)."""
    out = []
    for s in samples:
        enr = s.get("enrichment")
        if enr is None:
            continue
        ref = f"{s['h5ad']}: patient {s['patient_id']}, obs['tumour_region'] spots vs the other spots"
        details = [{"t": float(t), "fdr": float(q), "patient_id": s["patient_id"]}
                   for t, q in zip(enr["t"], enr["fdr"])]
        out.append(_rows(enr.index, spec, enr["log2_fold_change"].to_numpy(), ref, details,
                         fdr=enr["fdr"].to_numpy()))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)


def model_rows(attribution: pd.Series, spec: SourceSpec, where: str) -> pd.DataFrame:
    """Model attribution per expression feature (gene) of the fused diagnosis model."""
    return _rows(attribution.index, spec, attribution.to_numpy(), f"{where}: expression feature by gene name")


def tractability_rows(links: pd.DataFrame, config: ScoringConfig, source_rows: dict[tuple[str, str], list[int]],
                      compounds_file: Path) -> pd.DataFrame:
    """One row per (gene, compound) link scored from its pChEMBL; predicted links (``link_type``) discounted."""
    if links.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    kind = links["link_type"] if "link_type" in links.columns else pd.Series("measured", index=links.index)
    out = []
    for k in ("measured", "predicted"):
        sub = links.loc[kind == k]
        spec = config.tractability.get(k)
        if sub.empty or spec is None:
            continue
        refs = [f"{compounds_file}: data rows {_listed(source_rows.get((g, c), []))}" if k == "measured"
                else f"activity model {v}" for g, c, v in
                zip(sub["target_gene"], sub["compound_id"], sub.get("model_version", pd.Series("", index=sub.index)))]
        details = [{"compound_id": c, "activity_type": a, "link_type": k}
                   for c, a in zip(sub["compound_id"], sub["activity_type"])]
        out.append(_rows(sub["target_gene"], spec, sub["pchembl"].to_numpy(), refs, details)
                   .assign(source=f"{k}_activity"))
    rows = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)
    rows["evidence_type"] = TRACTABILITY
    return rows
