"""Readers for GDC/TCGA omics files: STAR gene counts, sample sheets, MAF, GISTIC copy number, clinical.tsv."""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from fusion.errors import OmicsFormatError
from omics.barcodes import Barcode, parse_barcode, patient_id
from omics.clinical import (
    GDC_DEATH_DAYS,
    GDC_FOLLOW_UP_DAYS,
    GDC_MISSING,
    GDC_VITAL_STATUS,
    VITAL_STATUS_EVENT,
    gdc_overall_survival_days,
)

log = logging.getLogger(__name__)

STAR_COLUMNS = (
    "gene_id",
    "gene_name",
    "gene_type",
    "unstranded",
    "stranded_first",
    "stranded_second",
    "tpm_unstranded",
    "fpkm_unstranded",
    "fpkm_uq_unstranded",
)
STAR_COUNT_COLUMNS = ("unstranded", "stranded_first", "stranded_second")
STAR_FLOAT_COLUMNS = ("tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded")
STAR_SUMMARY_ROWS = ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")

# Columns both portal generations write; the older one adds "Sample Type", portal 2.0 instead
# "Tissue Type", "Tumor Descriptor", "Specimen Type", "Preservation Method" (see GDC-FORMATS.md).
SAMPLE_SHEET_COLUMNS = (
    "File ID",
    "File Name",
    "Data Category",
    "Data Type",
    "Project ID",
    "Case ID",
    "Sample ID",
)
SAMPLE_SHEET_LEGACY_COLUMNS = SAMPLE_SHEET_COLUMNS + ("Sample Type",)
SAMPLE_SHEET_PORTAL2_COLUMNS = SAMPLE_SHEET_COLUMNS + (
    "Tissue Type", "Tumor Descriptor", "Specimen Type", "Preservation Method")
EXPRESSION_DATA_TYPE = "Gene Expression Quantification"

MAF_REQUIRED_COLUMNS = (
    "Hugo_Symbol",
    "Chromosome",
    "Start_Position",
    "Variant_Classification",
    "Variant_Type",
    "Reference_Allele",
    "Tumor_Seq_Allele2",
    "Tumor_Sample_Barcode",
)  # HGVSp_Short only in gdc-2.0 MAFs: optional
NON_SILENT_CLASSES = frozenset(
    {
        "Missense_Mutation",
        "Nonsense_Mutation",
        "Frame_Shift_Del",
        "Frame_Shift_Ins",
        "In_Frame_Del",
        "In_Frame_Ins",
        "Splice_Site",
        "Translation_Start_Site",
        "Nonstop_Mutation",
    }
)

COPY_NUMBER_ID_COLUMNS = ("Gene Symbol", "Locus ID", "Cytoband")

# the survival column names and vital-status words are omics.clinical's vocabulary (one place for outcomes)
CLINICAL_REQUIRED_COLUMNS = (
    "case_submitter_id",
    "project_id",
    GDC_VITAL_STATUS,
    GDC_DEATH_DAYS,
    GDC_FOLLOW_UP_DAYS,
)
# Newer GDC exports prefix the columns with their entity; map them to the classic names.
_CLINICAL_ALIASES = {
    "cases.case_id": "case_id",
    "cases.submitter_id": "case_submitter_id",
    "project.project_id": "project_id",
    "demographic.vital_status": "vital_status",
    "demographic.days_to_death": "days_to_death",
    "diagnoses.days_to_last_follow_up": "days_to_last_follow_up",
    "diagnoses.primary_diagnosis": "primary_diagnosis",
    "demographic.age_at_index": "age_at_index",
    "demographic.gender": "gender",
}


def _require_columns(df: pd.DataFrame, required: Sequence[str], path: Path, what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise OmicsFormatError(
            f"{path}: {what} lacks required column(s) {missing}; found {list(df.columns)[:12]}"
        )


def _read_tsv(path: Path, what: str, **kwargs: object) -> pd.DataFrame:
    if not path.is_file():
        raise OmicsFormatError(f"{path}: {what} file not found")
    try:
        return pd.read_csv(path, sep="\t", low_memory=False, **kwargs)  # type: ignore[arg-type]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError,
            zlib.error) as exc:
        raise OmicsFormatError(f"{path}: cannot parse {what} as tab-separated text: {exc}") from exc


def require_line_end(path: Path, what: str) -> None:
    """OmicsFormatError unless the plain-text ``path`` ends with a line end: a GDC pipeline always writes
    one, so a last line without it is a file cut short in transfer (its last row would parse as a shorter,
    wrong value instead of failing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return  # an empty file: the parser names it
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
    except OSError as exc:
        raise OmicsFormatError(f"{path}: cannot read {what}: {exc}") from exc
    if last not in (b"\n", b"\r"):
        raise OmicsFormatError(f"{path}: {what} is truncated: the last line has no line end "
                               f"(the file ends mid-row at byte {path.stat().st_size})")


def _integer_column(values: pd.Series, path: Path, column: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(values.dtype):
        array = values.to_numpy(dtype=np.int64)
        if (array < 0).any():
            raise OmicsFormatError(f"{path}: column {column!r} must hold non-negative integer read counts")
        return array
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna()
    if bad.any():
        first = values[bad].iloc[0]
        raise OmicsFormatError(
            f"{path}: column {column!r} must hold integer read counts; found {first!r} "
            f"in {int(bad.sum())} row(s)"
        )
    array = numeric.to_numpy(dtype=np.float64)
    if (array < 0).any() or not np.array_equal(array, np.round(array)):
        raise OmicsFormatError(f"{path}: column {column!r} must hold non-negative integer read counts")
    return array.astype(np.int64)


def read_star_counts(path: str | Path) -> pd.DataFrame:
    """Read a GDC 'augmented_star_gene_counts' TSV: one row per gene (summary N_* rows dropped), counts in reads."""
    path = Path(path)
    text_columns = {"gene_id": str, "gene_name": str, "gene_type": str}
    if path.is_file() and path.suffix != ".gz":
        require_line_end(path, "STAR gene counts")
    df = _read_tsv(path, "STAR gene counts", comment="#", dtype=text_columns, keep_default_na=False, na_values=[""])
    _require_columns(df, STAR_COLUMNS, path, "STAR gene counts")
    df = df.loc[~df["gene_id"].isin(STAR_SUMMARY_ROWS), list(STAR_COLUMNS)].reset_index(drop=True)
    if df.empty:
        raise OmicsFormatError(f"{path}: STAR gene counts has no gene rows after the N_* summary rows")
    if df["gene_id"].isna().any() or df["gene_id"].duplicated().any():
        raise OmicsFormatError(f"{path}: column 'gene_id' must be present and unique for every gene row")
    for column in STAR_COUNT_COLUMNS:
        df[column] = _integer_column(df[column], path, column)
    for column in STAR_FLOAT_COLUMNS:
        numeric = pd.to_numeric(df[column], errors="coerce")
        if numeric.isna().any():
            first = df.loc[numeric.isna(), column].iloc[0]
            raise OmicsFormatError(f"{path}: column {column!r} must be numeric for every gene; found {first!r}")
        df[column] = numeric.astype(np.float64)
    df["gene_name"] = df["gene_name"].fillna(df["gene_id"])
    df["gene_type"] = df["gene_type"].fillna("")
    return df


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read a GDC sample sheet TSV (one row per file, either portal generation) and check its columns.

    A "Sample Type" column is derived for portal 2.0 sheets ("Tissue Type" + "Tumor Descriptor") so
    callers see one layout; multi-sample rows keep their ", "-joined lists.
    """
    path = Path(path)
    df = _read_tsv(path, "GDC sample sheet", dtype=str)
    _require_columns(df, SAMPLE_SHEET_COLUMNS, path, "GDC sample sheet")
    if "Sample Type" not in df.columns:
        if "Tissue Type" not in df.columns:
            raise OmicsFormatError(f"{path}: GDC sample sheet needs 'Sample Type' (older portal) or "
                                   f"'Tissue Type' (portal 2.0); found {list(df.columns)}")
        descriptor = df.get("Tumor Descriptor", pd.Series("", index=df.index)).fillna("")
        df["Sample Type"] = [", ".join(f"{d} {t}".strip() if d and d != "Not Applicable" else t
                                       for t, d in zip(str(tt).split(", "), str(dd).split(", ")))
                             for tt, dd in zip(df["Tissue Type"].fillna(""), descriptor)]
    if df["File ID"].isna().any() or df["File Name"].isna().any():
        raise OmicsFormatError(f"{path}: every row needs a 'File ID' and a 'File Name'")
    return df


def locate_gdc_file(files_dir: Path, file_id: str, file_name: str) -> Path:
    """Where a sample-sheet file lies: gdc-client's <dir>/<File ID>/<File Name>, else a flat <dir>/<File Name>.

    A gdc-client download still in progress (``<File Name>.partial``) is not the file: the path
    returned then does not exist and the reader names it.
    """
    nested = Path(files_dir) / file_id / file_name
    return nested if nested.is_file() else Path(files_dir) / file_name




def read_expression_cohort(
    sample_sheet_path: str | Path,
    files_dir: str | Path,
    *,
    gene_types: Sequence[str] | None = ("protein_coding",),
) -> tuple[ad.AnnData, list[str]]:
    """Read every STAR counts file of a sample sheet into samples x genes AnnData (X = unstranded reads, float32).

    Returns ``(adata, errors)``: a file that is missing, unreadable, malformed or whose gene list differs from
    the one most samples share (``majority_gene_list``: a file cut at a line boundary parses cleanly but
    lists fewer genes) is skipped and described in ``errors`` (also copied to ``adata.uns['errors']``).
    ``gene_types=None`` keeps every gene type.
    """
    sample_sheet_path, files_dir = Path(sample_sheet_path), Path(files_dir)
    sheet = _expression_rows(sample_sheet_path)
    errors: list[str] = []
    read: list[tuple[Path, Barcode, object, str, pd.DataFrame]] = []
    wanted = sheet[["File ID", "File Name", "Sample ID", "Sample Type"]]
    for file_id, file_name, sample_id, sample_type in wanted.itertuples(index=False, name=None):
        path = locate_gdc_file(files_dir, str(file_id), str(file_name))
        try:
            barcode = parse_barcode(str(sample_id).split(", ")[0])
            counts = read_star_counts(path)
        except OmicsFormatError as exc:
            _skip(errors, path, exc)
            continue
        read.append((path, barcode, sample_type, str(file_name), counts[["gene_id", "gene_name", "gene_type", "unstranded"]]))
    if not read:
        raise OmicsFormatError(
            f"{sample_sheet_path}: no counts file could be read from {files_dir}: " + "; ".join(errors)
        )
    gene_lists = [r[4]["gene_id"].to_numpy() for r in read]
    ref = majority_gene_list(gene_lists)
    reference = read[ref][4]
    columns: list[np.ndarray] = []
    obs_rows: list[dict[str, object]] = []
    seen: set[str] = set()
    n_ref = sum(np.array_equal(g, gene_lists[ref]) for g in gene_lists)
    for (path, barcode, sample_type, file_name, counts), genes in zip(read, gene_lists):
        problem = gene_list_problem(genes, gene_lists[ref], n_ref, "column 'gene_id'")
        if problem is not None:
            _skip(errors, path, OmicsFormatError(f"{path}: STAR gene counts {problem}"))
            continue
        if barcode.barcode in seen:
            _skip(errors, path, OmicsFormatError(f"sample {barcode.barcode} already read from another file"))
            continue
        seen.add(barcode.barcode)
        columns.append(counts["unstranded"].to_numpy(dtype=np.float32))
        obs_rows.append(_sample_obs(barcode, sample_type, file_name))
    return _cohort_anndata(reference, columns, obs_rows, gene_types, errors), errors


def _skip(errors: list[str], path: Path, exc: Exception) -> None:
    """Record (and log) one skipped counts file."""
    message = f"skipped {path}: {exc}"
    log.warning(message)
    errors.append(message)


def majority_gene_list(gene_lists: Sequence[np.ndarray]) -> int:
    """Index of a gene list that the most samples share exactly (ties: the longest, then the first).

    A per-sample table cut at a line boundary (an interrupted copy) parses as a valid, shorter table: only
    the other samples of the cohort tell it apart, so the gene list they agree on is the reference.
    """
    keys = [hash(tuple(map(str, g))) for g in gene_lists]
    counts = {k: keys.count(k) for k in keys}
    return max(range(len(gene_lists)), key=lambda i: (counts[keys[i]], len(gene_lists[i]), -i))


def gene_list_problem(genes: np.ndarray, reference: np.ndarray, n_reference: int, column: str) -> str | None:
    """What is wrong with a sample's gene list against the cohort's ``reference`` (shared by ``n_reference``
    samples), or None when they are equal; a strict prefix is named as a truncation at a line boundary."""
    if np.array_equal(genes, reference):
        return None
    others = f"{n_reference} other sample(s)"
    if len(genes) < len(reference) and np.array_equal(genes, reference[:len(genes)]):
        return (f"truncated at a line boundary: {column} stops after {len(genes)} of the {len(reference)} genes "
                f"that {others} list (last gene {genes[-1] if len(genes) else None!r})")
    return f"{column} differs from the gene list of {others} ({len(genes)} vs {len(reference)} genes)"


def _expression_rows(sample_sheet_path: Path) -> pd.DataFrame:
    """The sample sheet's 'Gene Expression Quantification' rows; OmicsFormatError when there are none."""
    sheet = read_sample_sheet(sample_sheet_path)
    sheet = sheet.loc[sheet["Data Type"] == EXPRESSION_DATA_TYPE]
    if sheet.empty:
        raise OmicsFormatError(
            f"{sample_sheet_path}: column 'Data Type' has no {EXPRESSION_DATA_TYPE!r} rows"
        )
    return sheet


def _sample_obs(barcode: Barcode, sample_type: object, file_name: str) -> dict[str, object]:
    """One obs row: the sample's barcode, patient, sample type (code and sheet text), tumour/normal, file."""
    return {
        "sample_id": barcode.barcode,
        "patient_id": barcode.patient_id,
        "sample_type_code": barcode.sample_type_code,
        "sample_type": sample_type,
        "is_tumour": barcode.is_tumour,
        "is_normal": barcode.is_normal,
        "file_name": file_name,
    }


def _cohort_anndata(
    reference: pd.DataFrame,
    columns: list[np.ndarray],
    obs_rows: list[dict[str, object]],
    gene_types: Sequence[str] | None,
    errors: list[str],
) -> ad.AnnData:
    """Samples x genes AnnData of the read counts, genes limited to ``gene_types`` (None: all), var indexed
    by unique gene names, obs by barcode, ``uns['errors']`` the skipped files."""
    x = np.stack(columns, axis=0)
    keep = np.ones(len(reference), dtype=bool)
    if gene_types is not None:
        keep = reference["gene_type"].isin(list(gene_types)).to_numpy()
    var = reference.loc[keep, ["gene_id", "gene_name", "gene_type"]].reset_index(drop=True)
    obs = pd.DataFrame(obs_rows).set_index("sample_id")
    obs.index.name = "barcode"
    var.index = ad.utils.make_index_unique(pd.Index(var["gene_name"].astype(str)))
    adata = ad.AnnData(X=x[:, keep], obs=obs, var=var)
    adata.uns["errors"] = list(errors)
    return adata


def read_maf(path: str | Path) -> pd.DataFrame:
    """Read a GDC MAF ('#' comment lines skipped) with a patient_id column from Tumor_Sample_Barcode."""
    path = Path(path)
    df = _read_tsv(path, "MAF", comment="#", dtype=str, compression="infer")
    _require_columns(df, MAF_REQUIRED_COLUMNS, path, "MAF")
    start = pd.to_numeric(df["Start_Position"], errors="coerce")
    if start.isna().any():
        first = df.loc[start.isna(), "Start_Position"].iloc[0]
        raise OmicsFormatError(f"{path}: column 'Start_Position' must be an integer position; found {first!r}")
    df["Start_Position"] = start.astype(np.int64)
    try:
        df["patient_id"] = [patient_id(b) for b in df["Tumor_Sample_Barcode"]]
    except OmicsFormatError as exc:
        raise OmicsFormatError(f"{path}: column 'Tumor_Sample_Barcode': {exc}") from exc
    return df


def mutation_matrix(maf: pd.DataFrame, patients: Sequence[str], genes: Sequence[str]) -> pd.DataFrame:
    """Patients x genes boolean table: True where the patient has a non-silent mutation in the gene."""
    hits = maf.loc[maf["Variant_Classification"].isin(NON_SILENT_CLASSES), ["patient_id", "Hugo_Symbol"]]
    hits = hits.drop_duplicates()
    table = pd.DataFrame(False, index=pd.Index(list(patients), name="patient_id"), columns=list(genes))
    hits = hits.loc[hits["patient_id"].isin(table.index) & hits["Hugo_Symbol"].isin(table.columns)]
    rows = table.index.get_indexer(hits["patient_id"])
    cols = table.columns.get_indexer(hits["Hugo_Symbol"])
    values = table.to_numpy(copy=True)
    values[rows, cols] = True
    return pd.DataFrame(values, index=table.index, columns=table.columns)


def read_copy_number(path: str | Path) -> pd.DataFrame:
    """Read a GISTIC2 'all_thresholded.by_genes' table into genes x patients (values -2..2, int8).

    Aliquot columns are reduced to patient ids; when a patient has several aliquots the first is kept.
    """
    path = Path(path)
    df = _read_tsv(path, "GISTIC thresholded copy number")
    _require_columns(df, COPY_NUMBER_ID_COLUMNS, path, "GISTIC thresholded copy number")
    aliquots = [c for c in df.columns if c not in COPY_NUMBER_ID_COLUMNS]
    if not aliquots:
        raise OmicsFormatError(f"{path}: no aliquot barcode columns after {list(COPY_NUMBER_ID_COLUMNS)}")
    try:
        patients = [patient_id(str(c)) for c in aliquots]
    except OmicsFormatError as exc:
        raise OmicsFormatError(f"{path}: column header: {exc}") from exc
    values = df[aliquots].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (-2, -1, 0, 1, 2))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise OmicsFormatError(
            f"{path}: column {aliquots[c]!r} row {r} holds {df[aliquots[c]].iloc[r]!r}; "
            "expected a thresholded copy-number call in {-2,-1,0,1,2}"
        )
    first = ~pd.Index(patients).duplicated()
    table = pd.DataFrame(
        values[:, first].astype(np.int8),
        index=pd.Index(df["Gene Symbol"].astype(str), name="gene"),
        columns=pd.Index(np.asarray(patients)[first], name="patient_id"),
    )
    return table.loc[~table.index.duplicated()]


def _days(values: pd.Series, path: Path, column: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        raise OmicsFormatError(
            f"{path}: column {column!r} must be a number of days or {GDC_MISSING}; found {values[bad].iloc[0]!r}"
        )
    return numeric


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read GDC clinical.tsv into one row per patient with overall survival os_time_days (days) and os_event (1=dead).

    os_time_days is days_to_death for dead patients and days_to_last_follow_up for living ones, falling back
    to the other when the first is missing. Patients with no usable time, a negative time or an unknown
    vital_status are dropped; the reasons are logged and kept in ``df.attrs['errors']``.
    """
    path = Path(path)
    df = _read_tsv(path, "GDC clinical", dtype=str, na_values=[GDC_MISSING, "--"], keep_default_na=True)
    df = df.rename(columns={k: v for k, v in _CLINICAL_ALIASES.items() if k in df.columns})
    _require_columns(df, CLINICAL_REQUIRED_COLUMNS, path, "GDC clinical")
    try:
        df["patient_id"] = [patient_id(str(b)) for b in df["case_submitter_id"]]
    except OmicsFormatError as exc:
        raise OmicsFormatError(f"{path}: column 'case_submitter_id': {exc}") from exc
    death = _days(df["days_to_death"], path, "days_to_death")
    follow_up = _days(df["days_to_last_follow_up"], path, "days_to_last_follow_up")
    df["days_to_death"], df["days_to_last_follow_up"] = death, follow_up
    # clinical.tsv repeats a case once per treatment/diagnosis: keep the latest known times per patient.
    grouped = df.groupby("patient_id", sort=False)
    first = grouped.first()
    first["days_to_death"] = grouped["days_to_death"].max()
    first["days_to_last_follow_up"] = grouped["days_to_last_follow_up"].max()
    status = first["vital_status"].str.strip().str.capitalize()
    event = status.map({word.capitalize(): value for word, value in VITAL_STATUS_EVENT.items()})
    first["os_time_days"] = gdc_overall_survival_days(first["days_to_death"], first["days_to_last_follow_up"], event)
    first["os_event"] = event
    errors: list[str] = []
    reasons = {
        "vital_status is not 'Alive' or 'Dead'": event.isna(),
        "neither days_to_death nor days_to_last_follow_up": event.notna() & first["os_time_days"].isna(),
        "negative survival time": first["os_time_days"] < 0,
    }
    drop = pd.Series(False, index=first.index)
    for reason, mask in reasons.items():
        for pid in first.index[mask & ~drop]:
            errors.append(f"{path}: dropped patient {pid}: {reason}")
        drop |= mask
    for message in errors:
        log.warning(message)
    out = first.loc[~drop].copy()
    out["os_event"] = out["os_event"].astype(np.int64)
    for column in ("age_at_index",):
        if column in out.columns:
            out[column] = pd.to_numeric(out[column], errors="coerce")
    out.index.name = "patient_id"
    out.attrs["errors"] = errors
    return out
