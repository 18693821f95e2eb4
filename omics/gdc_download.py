"""A gdc-client download as a cohort: per-aliquot MAFs merged, per-sample gene-level copy number.

The download layout is ``<dir>/<File ID>/<File Name>`` (gdc-client) with the portal's sample sheet
linking each file to its case and samples; files that hold a tumour/normal pair list both samples,
", "-joined, in either order (GDC-FORMATS.md). One bad file is reported and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fusion.errors import OmicsFormatError
from omics.barcodes import parse_barcode
from omics.gdc import (
    _read_tsv,
    _require_columns,
    gene_list_problem,
    locate_gdc_file,
    majority_gene_list,
    read_maf,
    read_sample_sheet,
    require_line_end,
)

log = logging.getLogger(__name__)

MAF_DATA_TYPE = "Masked Somatic Mutation"
GENE_CN_DATA_TYPE = "Gene Level Copy Number"
GENE_CN_COLUMNS = ("gene_id", "gene_name", "chromosome", "start", "end", "copy_number",
                   "min_copy_number", "max_copy_number")
# Several copy-number pipelines may exist per case: the first match in this order wins.
CN_PIPELINE_PREFERENCE = ("ascat3", "ascat2", "ascatngs", "absolute")


def tumour_sample(sample_ids: str, where: str) -> str:
    """The tumour barcode among a sample-sheet cell's ", "-joined samples (sample type 01-09)."""
    samples = [s.strip() for s in str(sample_ids).split(",") if s.strip()]
    for s in samples:
        if parse_barcode(s).is_tumour:
            return parse_barcode(s).barcode
    raise OmicsFormatError(f"{where}: column 'Sample ID' lists no tumour sample (type 01-09); found {samples}")


def _sheet_rows(sheet_path: Path, data_type: str) -> pd.DataFrame:
    sheet = read_sample_sheet(sheet_path)
    rows = sheet.loc[sheet["Data Type"] == data_type]
    if rows.empty:
        raise OmicsFormatError(f"{sheet_path}: column 'Data Type' has no {data_type!r} rows; "
                               f"found {sorted(sheet['Data Type'].dropna().unique())}")
    return rows


def read_maf_files(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    """Merge MAF files (plain or .gz, one per aliquot as the GDC ships them); bad files are skipped.

    Returns ``(maf, errors)``; identical rows from overlapping files are kept once.
    Raises OmicsFormatError when no file could be read.
    """
    frames, errors = [], []
    for path in paths:
        try:
            one = read_maf(path)
        except OmicsFormatError as exc:
            errors.append(f"skipped {path}: {exc}")
            log.warning(errors[-1])
            continue
        # provenance of every row: its file and 1-based data row there (evidence stays traceable)
        frames.append(one.assign(source_file=str(path), source_row=np.arange(1, len(one) + 1)))
    if not frames:
        raise OmicsFormatError("no MAF file could be read: " + "; ".join(errors))
    maf = pd.concat(frames, ignore_index=True)
    maf = maf.drop_duplicates(subset=[c for c in maf.columns if c not in ("source_file", "source_row")],
                              ignore_index=True)
    return maf, errors


def read_maf_download(sheet_path: str | Path, files_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Every 'Masked Somatic Mutation' file of a sample sheet, found in the download folder, merged."""
    rows = _sheet_rows(Path(sheet_path), MAF_DATA_TYPE)
    paths = [locate_gdc_file(Path(files_dir), str(i), str(n)) for i, n in zip(rows["File ID"], rows["File Name"])]
    return read_maf_files(paths)


def read_gene_level_copy_number(path: str | Path) -> pd.DataFrame:
    """One GDC gene-level copy-number TSV: gene_name -> copy_number (absolute, integer copies)."""
    path = Path(path)
    if path.is_file() and path.suffix != ".gz":
        require_line_end(path, "gene-level copy number")
    df = _read_tsv(path, "gene-level copy number", dtype={"gene_id": str, "gene_name": str, "chromosome": str})
    _require_columns(df, GENE_CN_COLUMNS, path, "gene-level copy number")
    cn = pd.to_numeric(df["copy_number"], errors="coerce")
    bad = cn.isna() & df["copy_number"].notna()
    if bad.any():
        raise OmicsFormatError(f"{path}: column 'copy_number' must be a number of copies; "
                               f"found {df.loc[bad, 'copy_number'].iloc[0]!r}")
    if (cn < 0).any():
        raise OmicsFormatError(f"{path}: column 'copy_number' must be >= 0 copies")
    out = pd.Series(cn.to_numpy(float), index=pd.Index(df["gene_name"].astype(str), name="gene"))
    return out.loc[~out.index.duplicated()]


def copy_number_calls(copies: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """Absolute copies -> GISTIC-style calls against a diploid genome: 0 -> -2, 1 -> -1, 2 -> 0,
    3-4 -> 1 (gain), >= 5 -> 2 (high-level amplification); missing stays missing."""
    bins = [-np.inf, 0.5, 1.5, 2.5, 4.5, np.inf]
    calls = np.digitize(np.asarray(copies, dtype=float), bins[1:-1]) - 2
    calls = np.where(np.isnan(np.asarray(copies, dtype=float)), np.nan, calls)
    return type(copies)(calls, index=copies.index, **({"columns": copies.columns} if hasattr(copies, "columns") else {}))


def _pipeline_rank(file_name: str) -> int:
    name = file_name.lower()
    return next((k for k, p in enumerate(CN_PIPELINE_PREFERENCE) if f".{p}." in name), len(CN_PIPELINE_PREFERENCE))


def read_copy_number_download(sheet_path: str | Path, files_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Per-sample gene-level copy-number files of a sample sheet -> genes x patients calls (-2..2).

    Each file is keyed by the tumour sample of its sheet row; per patient one pipeline is used
    (``CN_PIPELINE_PREFERENCE``), the others are ignored. A file whose gene list differs from the one most
    files share (``omics.gdc.majority_gene_list``: a file cut at a line boundary parses as a shorter, valid
    table) is skipped, named, instead of reading its missing genes as diploid. Returns ``(calls, errors)``.
    """
    sheet_path, files_dir = Path(sheet_path), Path(files_dir)
    rows = _sheet_rows(sheet_path, GENE_CN_DATA_TYPE)
    rows = rows.assign(_rank=[_pipeline_rank(str(n)) for n in rows["File Name"]]).sort_values("_rank", kind="stable")
    read: dict[str, tuple[Path, pd.Series]] = {}
    errors: list[str] = []
    for file_id, file_name, samples in rows[["File ID", "File Name", "Sample ID"]].itertuples(index=False):
        path = locate_gdc_file(files_dir, str(file_id), str(file_name))
        try:
            patient = tumour_sample(samples, f"{sheet_path} row of {file_name}")[:12]
            if patient in read:
                continue
            read[patient] = (path, read_gene_level_copy_number(path))
        except OmicsFormatError as exc:
            errors.append(f"skipped {path}: {exc}")
            log.warning(errors[-1])
    if not read:
        raise OmicsFormatError(f"{sheet_path}: no gene-level copy-number file could be read: " + "; ".join(errors))
    genes = [series.index.to_numpy() for _, series in read.values()]
    ref = genes[majority_gene_list(genes)]
    n_ref = sum(np.array_equal(g, ref) for g in genes)
    columns: dict[str, pd.Series] = {}
    for (patient, (path, series)), g in zip(read.items(), genes):
        problem = gene_list_problem(g, ref, n_ref, "column 'gene_name'")
        if problem is None:
            columns[patient] = series
        else:
            errors.append(f"skipped {path}: {path}: gene-level copy number {problem}")
            log.warning(errors[-1])
    copies = pd.DataFrame(columns)
    copies.columns.name = "patient_id"
    calls = copy_number_calls(copies).fillna(0).astype(np.int8)
    return calls, errors
