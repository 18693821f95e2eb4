"""Format-only writers for GDC/TCGA files (STAR counts, sample sheet, MAF, GISTIC copy number, clinical.tsv).

The caller simulates the values; these functions only lay them out the way the GDC does. Every file is
written to a temporary path and renamed, so a partial file never looks complete.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

# the format constants are the reader's, so writer and reader cannot drift apart
from omics.gdc import GDC_MISSING, MAF_REQUIRED_COLUMNS, SAMPLE_SHEET_LEGACY_COLUMNS, SAMPLE_SHEET_PORTAL2_COLUMNS  # noqa: E402
from omics.gdc import STAR_COLUMNS as STAR_HEADER  # noqa: E402

# The GDC public MAF columns up to HGVSp_Short plus the read-count columns most tools use.
MAF_COLUMNS = (
    "Hugo_Symbol",
    "Entrez_Gene_Id",
    "Center",
    "NCBI_Build",
    "Chromosome",
    "Start_Position",
    "End_Position",
    "Strand",
    "Variant_Classification",
    "Variant_Type",
    "Reference_Allele",
    "Tumor_Seq_Allele1",
    "Tumor_Seq_Allele2",
    "dbSNP_RS",
    "dbSNP_Val_Status",
    "Tumor_Sample_Barcode",
    "Matched_Norm_Sample_Barcode",
    "Match_Norm_Seq_Allele1",
    "Match_Norm_Seq_Allele2",
    "Tumor_Validation_Allele1",
    "Tumor_Validation_Allele2",
    "Match_Norm_Validation_Allele1",
    "Match_Norm_Validation_Allele2",
    "Verification_Status",
    "Validation_Status",
    "Mutation_Status",
    "Sequencing_Phase",
    "Sequence_Source",
    "Validation_Method",
    "Score",
    "BAM_File",
    "Sequencer",
    "Tumor_Sample_UUID",
    "Matched_Norm_Sample_UUID",
    "HGVSc",
    "HGVSp",
    "HGVSp_Short",
    "Transcript_ID",
    "Exon_Number",
    "t_depth",
    "t_ref_count",
    "t_alt_count",
    "n_depth",
    "n_ref_count",
    "n_alt_count",
)
MAF_REQUIRED = MAF_REQUIRED_COLUMNS + ("HGVSp_Short",)
CLINICAL_COLUMNS = (
    "case_id",
    "case_submitter_id",
    "project_id",
    "age_at_index",
    "age_is_obfuscated",
    "cause_of_death",
    "days_to_birth",
    "days_to_death",
    "ethnicity",
    "gender",
    "race",
    "vital_status",
    "year_of_birth",
    "year_of_death",
    "age_at_diagnosis",
    "ajcc_pathologic_stage",
    "days_to_diagnosis",
    "days_to_last_follow_up",
    "primary_diagnosis",
    "prior_malignancy",
    "site_of_resection_or_biopsy",
    "tissue_or_organ_of_origin",
    "treatment_type",
)


def _replace_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_text(path: str | Path, text: str) -> Path:
    return _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def new_file_uuid(rng: np.random.Generator) -> str:
    """A random version-4 UUID string (GDC file/case ids) drawn from the given generator, so it is seeded."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def write_star_counts(
    path: str | Path,
    gene_ids: Sequence[str],
    gene_names: Sequence[str],
    gene_types: Sequence[str],
    counts: np.ndarray,
    *,
    gene_lengths_bp: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write a GDC 'augmented_star_gene_counts' TSV from integer read counts per gene.

    stranded_first/second split each gene's reads binomially (an unstranded library, seeded); tpm, fpkm and
    fpkm_uq are computed from the counts and gene lengths in bp (seeded log-normal lengths when not given;
    the upper quartile is taken over protein-coding genes as the GDC does).
    """
    counts = np.asarray(counts)
    n = counts.shape[0]
    if counts.ndim != 1 or not (len(gene_ids) == len(gene_names) == len(gene_types) == n):
        raise ValueError("write_star_counts: gene_ids, gene_names, gene_types and counts must have equal length")
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("write_star_counts: counts must be non-negative integers")
    counts = counts.astype(np.int64)
    rng = np.random.default_rng(seed)
    if gene_lengths_bp is None:
        gene_lengths_bp = np.round(rng.lognormal(mean=np.log(2500.0), sigma=0.6, size=n)).clip(200, None)
    length_kb = np.asarray(gene_lengths_bp, dtype=np.float64) / 1e3
    first = rng.binomial(counts, 0.5)
    second = counts - first
    rate = counts / length_kb
    tpm = rate / max(rate.sum(), 1e-12) * 1e6
    total = max(counts.sum(), 1)
    fpkm = counts / length_kb / (total / 1e6)
    coding = np.asarray(gene_types) == "protein_coding"
    uq = np.percentile(counts[coding] if coding.any() else counts, 75)
    fpkm_uq = counts * 1e9 / (length_kb * 1e3 * max(uq, 1.0))
    total_f = float(total)
    summary = {
        "N_unmapped": (0.03, 0.03, 0.03),
        "N_multimapping": (0.05, 0.05, 0.05),
        "N_noFeature": (0.02, 0.52, 0.52),
        "N_ambiguous": (0.03, 0.004, 0.004),
    }
    lines = ["# gene-model: GENCODE v36", "\t".join(STAR_HEADER)]
    for name, fractions in summary.items():
        values = [str(int(round(f * total_f))) for f in fractions]
        lines.append("\t".join([name, "", "", *values, "", "", ""]))
    body = pd.DataFrame(
        {
            "gene_id": list(gene_ids),
            "gene_name": list(gene_names),
            "gene_type": list(gene_types),
            "unstranded": counts,
            "stranded_first": first,
            "stranded_second": second,
            "tpm_unstranded": np.round(tpm, 4),
            "fpkm_unstranded": np.round(fpkm, 4),
            "fpkm_uq_unstranded": np.round(fpkm_uq, 4),
        }
    )
    text = "\n".join(lines) + "\n" + body.to_csv(sep="\t", index=False, header=False, float_format="%.4f")
    return _write_text(path, text)


def write_sample_sheet(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write a GDC sample sheet TSV in the portal generation the rows describe: with a "Sample Type"
    key the older portal's eight columns, else portal 2.0's (Tissue Type, Tumor Descriptor, ...)."""
    table = pd.DataFrame(list(rows))
    columns = SAMPLE_SHEET_LEGACY_COLUMNS if "Sample Type" in table.columns else SAMPLE_SHEET_PORTAL2_COLUMNS
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"write_sample_sheet: rows lack key(s) {missing}")
    return _write_text(path, table[list(columns)].to_csv(sep="\t", index=False))


def _normal_barcode(tumour: str) -> str:
    # TCGA-XX-XXXX-01A-11D-A000-08 -> TCGA-XX-XXXX-10A-01D-A000-08 (blood-derived normal)
    parts = tumour.split("-")
    if len(parts) >= 4:
        parts[3] = "10" + parts[3][2:]
    if len(parts) >= 5:
        parts[4] = "01" + parts[4][2:]
    return "-".join(parts)


def write_maf(path: str | Path, records: pd.DataFrame, *, center: str = "BI", version: str = "gdc-1.0.0") -> Path:
    """Write a GDC-style MAF ('#version <version>' header; gzip when the name ends in .gz) from records
    holding at least the core columns (per-aliquot files say version 'gdc-2.0.0-aliquot-merged-masked').

    Standard columns the records lack are filled (End_Position from the alleles, Strand '+', NCBI_Build GRCh38,
    Tumor_Seq_Allele1 = reference, a matched blood-normal barcode, read counts); extra columns are appended.
    """
    missing = [c for c in MAF_REQUIRED if c not in records.columns]
    if missing:
        raise ValueError(f"write_maf: records lack column(s) {missing}")
    df = records.copy().reset_index(drop=True)
    ref = df["Reference_Allele"].astype(str)
    alt = df["Tumor_Seq_Allele2"].astype(str)
    start = df["Start_Position"].astype(np.int64)
    is_ins = df["Variant_Type"].astype(str).eq("INS")
    end = np.where(is_ins, start + 1, start + ref.str.len() - 1)
    fills = {
        "Entrez_Gene_Id": 0,
        "Center": center,
        "NCBI_Build": "GRCh38",
        "End_Position": end,
        "Strand": "+",
        "Tumor_Seq_Allele1": ref,
        "dbSNP_RS": "novel",
        "dbSNP_Val_Status": "",
        "Matched_Norm_Sample_Barcode": df["Tumor_Sample_Barcode"].astype(str).map(_normal_barcode),
        "Match_Norm_Seq_Allele1": ref,
        "Match_Norm_Seq_Allele2": ref,
        "Verification_Status": "",
        "Validation_Status": "",
        "Mutation_Status": "Somatic",
        "Sequencing_Phase": "",
        "Sequence_Source": "WXS",
        "Validation_Method": "",
        "Score": "",
        "BAM_File": "",
        "Sequencer": "Illumina HiSeq 2000",
        "HGVSc": "",
        "HGVSp": "",
        "Transcript_ID": "",
        "Exon_Number": "",
        "t_depth": 60,
        "t_ref_count": 40,
        "t_alt_count": 20,
        "n_depth": 50,
        "n_ref_count": 50,
        "n_alt_count": 0,
    }
    for column, value in fills.items():
        if column not in df.columns:
            df[column] = value
    for column in MAF_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    ordered = list(MAF_COLUMNS) + [c for c in df.columns if c not in MAF_COLUMNS]
    header = f"#version {version}\n#filedate 20240115\n#annotation.spec gdc-1.0.1-public\n"
    text = header + df[ordered].to_csv(sep="\t", index=False)
    if str(path).endswith(".gz"):
        import gzip

        return _replace_atomically(path, lambda tmp: tmp.write_bytes(gzip.compress(text.encode(), mtime=0)))
    return _write_text(path, text)


def write_gene_level_copy_number(path: str | Path, gene_ids: Sequence[str], gene_names: Sequence[str],
                                 copies: np.ndarray, chromosomes: Sequence[str] | None = None) -> Path:
    """Write one sample's GDC gene-level copy-number TSV (absolute integer copies per gene)."""
    copies = np.asarray(copies, dtype=np.int64)
    n = len(gene_ids)
    table = pd.DataFrame({"gene_id": list(gene_ids), "gene_name": list(gene_names),
                          "chromosome": list(chromosomes) if chromosomes is not None
                          else [f"chr{1 + i % 22}" for i in range(n)],
                          "start": 1_000_000 + 50_000 * np.arange(n), "end": 1_020_000 + 50_000 * np.arange(n),
                          "copy_number": copies, "min_copy_number": copies, "max_copy_number": copies})
    return _write_text(path, table.to_csv(sep="\t", index=False))


def write_copy_number(
    path: str | Path, table: pd.DataFrame, gene_ids: Sequence[int | str], cytobands: Sequence[str]
) -> Path:
    """Write a GISTIC2 'all_thresholded.by_genes' table from genes x aliquot barcodes calls in {-2..2}."""
    values = table.to_numpy()
    if not np.isin(values, (-2, -1, 0, 1, 2)).all():
        raise ValueError("write_copy_number: calls must be in {-2,-1,0,1,2}")
    if not (len(gene_ids) == len(cytobands) == table.shape[0]):
        raise ValueError("write_copy_number: gene_ids and cytobands must have one entry per gene row")
    out = pd.DataFrame(values.astype(np.int64), columns=[str(c) for c in table.columns])
    out.insert(0, "Cytoband", list(cytobands))
    out.insert(0, "Locus ID", list(gene_ids))
    out.insert(0, "Gene Symbol", [str(g) for g in table.index])
    return _write_text(path, out.to_csv(sep="\t", index=False))


def _gdc_cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return GDC_MISSING
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    return text if text != "" else GDC_MISSING


def write_clinical(path: str | Path, df: pd.DataFrame) -> Path:
    """Write a GDC clinical.tsv (standard columns, missing values as the literal '--) from one row per case.

    df needs case_submitter_id; case_id defaults to a UUID derived from it; other GDC columns default to '--
    and any extra columns of df are appended.
    """
    if "case_submitter_id" not in df.columns:
        raise ValueError("write_clinical: df lacks column 'case_submitter_id'")
    out = df.copy().reset_index(drop=True)
    if "case_id" not in out.columns:
        out["case_id"] = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"gdc-case/{s}")) for s in out["case_submitter_id"]]
    ordered = list(CLINICAL_COLUMNS) + [c for c in out.columns if c not in CLINICAL_COLUMNS]
    for column in ordered:
        if column not in out.columns:
            out[column] = None
    cells = out[ordered].astype(object).map(_gdc_cell)
    return _write_text(path, cells.to_csv(sep="\t", index=False))


# ------------------------------------------------------------------ gdc-client download layout
GDC_PROJECT = "TCGA-FXRX"
_CALL_TO_COPIES = {-2: 0, -1: 1, 0: 2, 1: 3, 2: 6}  # the inverse of omics.gdc_download.copy_number_calls


def portal2_sample_fields(sample_barcodes: Sequence[str]) -> dict[str, str]:
    """Portal 2.0 sample-sheet cells for ", "-joined samples (Tissue Type, Tumor Descriptor, ...)."""
    tumour = [int(b.split("-")[3][:2]) < 10 for b in sample_barcodes]
    blood = [b.split("-")[3][:2] == "10" for b in sample_barcodes]
    return {"Sample ID": ", ".join(sample_barcodes),
            "Tissue Type": ", ".join("Tumor" if t else "Normal" for t in tumour),
            "Tumor Descriptor": ", ".join("Primary" if t else "Not Applicable" for t in tumour),
            "Specimen Type": ", ".join("Peripheral Blood Components NOS" if b else "Solid Tissue" for b in blood),
            "Preservation Method": ", ".join("Unknown" for _ in sample_barcodes)}


def download_path(download_dir: str | Path, file_id: str, file_name: str) -> Path:
    """<dir>/<File ID>/<File Name> as gdc-client writes it, with its logs/<name>.parcel beside it."""
    folder = Path(download_dir) / file_id
    _write_text(folder / "logs" / f"{file_name}.parcel", f"gdc-client download of {file_id}\n")
    return folder / file_name


def sheet_row(file_id: str, file_name: str, category: str, data_type: str, case: str,
              samples: Sequence[str]) -> dict[str, str]:
    """One portal 2.0 sample-sheet row."""
    return {"File ID": file_id, "File Name": file_name, "Data Category": category, "Data Type": data_type,
            "Project ID": GDC_PROJECT, "Case ID": case, **portal2_sample_fields(samples)}


def write_aliquot_mafs(download_dir: str | Path, records: pd.DataFrame, rng: np.random.Generator) -> list[dict]:
    """One masked-somatic MAF (.maf.gz, 'gdc-2.0.0-aliquot-merged-masked') per tumour aliquot, each in its
    UUID folder; returns their sample-sheet rows (tumour and matched normal listed, normal first)."""
    rows = []
    for aliquot, part in records.groupby("Tumor_Sample_Barcode", sort=True):
        file_id = new_file_uuid(rng)
        name = f"{GDC_PROJECT}.{new_file_uuid(rng)}.wxs.aliquot_ensemble_masked.maf.gz"
        write_maf(download_path(download_dir, file_id, name), part, version="gdc-2.0.0-aliquot-merged-masked")
        normal = _normal_barcode(str(aliquot))
        rows.append(sheet_row(file_id, name, "Simple Nucleotide Variation", "Masked Somatic Mutation",
                              str(aliquot)[:12], [normal[:16], str(aliquot)[:16]]))
    return rows


def write_gene_level_cn_download(download_dir: str | Path, calls: pd.DataFrame, gene_ids: Sequence[str],
                                 rng: np.random.Generator, chromosomes: Sequence[str] | None = None) -> list[dict]:
    """Per tumour aliquot a gene-level copy-number TSV (ASCAT3 naming, absolute copies from the calls
    -2..2 as 0, 1, 2, 3, 6) in its UUID folder; returns the sample-sheet rows (tumour, normal)."""
    rows = []
    genes = [str(g) for g in calls.index]
    for aliquot in calls.columns:
        file_id = new_file_uuid(rng)
        name = f"{GDC_PROJECT}.{new_file_uuid(rng)}.ascat3.gene_level_copy_number.v36.tsv"
        copies = calls[aliquot].map(_CALL_TO_COPIES).to_numpy()
        write_gene_level_copy_number(download_path(download_dir, file_id, name), gene_ids, genes, copies, chromosomes)
        rows.append(sheet_row(file_id, name, "Copy Number Variation", "Gene Level Copy Number", str(aliquot)[:12],
                              [str(aliquot)[:16], _normal_barcode(str(aliquot))[:16]]))
    return rows
