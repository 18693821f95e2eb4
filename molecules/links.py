"""Compound-target links: best pchembl per (target gene, compound) and per-gene chemistry summaries."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from fusion.errors import MoleculeError

__all__ = [
    "ACTIVE_PCHEMBL",
    "LINK_COLUMNS",
    "target_compound_links",
    "compounds_for_targets",
    "summarise_target_chemistry",
]

ACTIVE_PCHEMBL = 6.0  # 1 uM: the usual ChEMBL threshold for calling a compound active
LINK_COLUMNS: tuple[str, ...] = (
    "target_gene", "compound_id", "name", "canonical_smiles", "pchembl", "activity_type",
    "activity_value_nm", "n_measurements", "source", "target_hgnc_id", "target_ensembl_id",
)
# library columns naming a target's HGNC / Ensembl gene id (first one present wins; case-insensitive)
TARGET_ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "target_hgnc_id": ("target_hgnc_id", "hgnc_id"),
    "target_ensembl_id": ("target_ensembl_id", "ensembl_gene_id", "ensembl_id"),
}


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MoleculeError(f"{what}: missing column(s) {missing} (found {list(df.columns)})")


def target_compound_links(compounds: pd.DataFrame) -> pd.DataFrame:
    """One row per (target_gene, compound_id): best (highest) pchembl with its activity_type and nM value, n_measurements, source.

    The link keeps the activity type of its best value (a Kd of 8 is never reported as an IC50); the
    target's HGNC / Ensembl ids come from the library's id columns (TARGET_ID_COLUMNS) when it has them.

    ``compounds`` is a table from ``read_compound_table`` (needs target_gene, compound_id,
    pchembl, activity_type; uses name, canonical_smiles, activity_value_nm and source when
    present). Rows without a pchembl are ignored. Sorted by gene, then pchembl descending.
    """
    _require(compounds, ("target_gene", "compound_id", "pchembl", "activity_type"), "compound table")
    df = compounds.copy()
    df["pchembl"] = pd.to_numeric(df["pchembl"], errors="coerce")
    df = df[df["pchembl"].notna()]
    for col, default in (("name", ""), ("canonical_smiles", ""), ("activity_value_nm", np.nan), ("source", "unknown")):
        if col not in df.columns:
            df[col] = default
    df["source"] = df["source"].fillna("unknown").astype(str).replace("", "unknown")
    df = _target_ids(df)
    keys = ["target_gene", "compound_id"]
    ordered = df.sort_values(keys + ["pchembl"], ascending=[True, True, False], kind="stable")
    best = ordered.drop_duplicates(subset=keys, keep="first").set_index(keys)
    grouped = df.groupby(keys, sort=True)
    best["n_measurements"] = grouped.size()
    best["source"] = grouped["source"].agg(lambda s: ";".join(sorted(set(s))))
    links = best.reset_index()[list(LINK_COLUMNS)]
    links["n_measurements"] = links["n_measurements"].astype(int)
    return links.sort_values(["target_gene", "pchembl", "compound_id"], ascending=[True, False, True],
                             kind="stable").reset_index(drop=True)


def _target_ids(df: pd.DataFrame) -> pd.DataFrame:
    """target_hgnc_id / target_ensembl_id columns: the gene's first non-empty id in the library, else None."""
    lower = {c.lower(): c for c in df.columns}
    for out, aliases in TARGET_ID_COLUMNS.items():
        col = next((lower[a] for a in aliases if a in lower), None)
        if col is None:
            df[out] = None
            continue
        ids = df[col].astype(object).where(df[col].notna() & (df[col].astype(str).str.strip() != ""))
        first = ids.groupby(df["target_gene"]).first()
        df[out] = df["target_gene"].map(first).astype(object).where(lambda s: s.notna(), None)
    return df


def compounds_for_targets(
    links: pd.DataFrame, genes: Iterable[str], min_pchembl: float | None = None
) -> pd.DataFrame:
    """Links of the given genes (optionally only pchembl >= min_pchembl), by gene then potency."""
    _require(links, ("target_gene", "compound_id", "pchembl"), "target-compound links")
    genes = list(genes)
    keep = links["target_gene"].isin(genes)
    if min_pchembl is not None:
        keep &= links["pchembl"] >= min_pchembl
    out = links[keep]
    order = {g: i for i, g in enumerate(dict.fromkeys(genes))}
    return (out.assign(_order=out["target_gene"].map(order))
            .sort_values(["_order", "pchembl", "compound_id"], ascending=[True, False, True], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def summarise_target_chemistry(links: pd.DataFrame, active_pchembl: float = ACTIVE_PCHEMBL) -> pd.DataFrame:
    """Per gene (index ``target_gene``): n_compounds, n_active (pchembl >= active_pchembl, default 6.0 = 1 uM), best_pchembl.

    ``best_pchembl`` is the tractability evidence of target ranking; sorted by it, descending.
    """
    _require(links, ("target_gene", "compound_id", "pchembl"), "target-compound links")
    grouped = links.groupby("target_gene", sort=True)
    active = links[links["pchembl"] >= active_pchembl].groupby("target_gene")["compound_id"].nunique()
    summary = pd.DataFrame({
        "n_compounds": grouped["compound_id"].nunique(),
        "best_pchembl": grouped["pchembl"].max(),
    })
    summary.insert(1, "n_active", active.reindex(summary.index, fill_value=0))
    summary = summary.rename_axis("target_gene").astype({"n_compounds": int, "n_active": int})
    # stable sort of the gene-sorted index: ties in best_pchembl stay alphabetical
    return summary.sort_values("best_pchembl", ascending=False, kind="stable")
