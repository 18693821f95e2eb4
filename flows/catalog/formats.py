"""The format -> reader table that `fusionrx scan` and the catalog share, with content sniffers.

Each entry names the modalities a format can feed, whether a catalog source of it is a file or a
folder, the function that reads it, and (for formats recognised by content) a ``detect`` function
that looks at a file's first bytes / header line and returns facts about it or None. A new format
is one entry here plus its reader.
"""

from __future__ import annotations

import csv
import gzip
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PARQUET_SIGNATURE = b"PAR1"
ID_COLUMNS = ("patient_id", "case_id", "case_submitter_id", "submitter_id", "slide_id", "id")
SMILES_COLUMNS = ("smiles", "canonical_smiles", "isomeric_smiles")


@dataclass(frozen=True)
class Format:
    """One readable format: catalog name, modalities it feeds, file/folder, reader, content sniffer."""

    name: str
    modalities: tuple[str, ...]
    kind: str                      # "file" | "folder" | "remote" (a PACS)
    reader: str                    # "module:function" that reads a source of this format
    needs_sample_sheet: bool = False
    detect: Callable[[list[str]], dict | None] | None = field(default=None, compare=False)


# ------------------------------------------------------------------------------ text sniffing
def _header_cells(lines: list[str]) -> tuple[list[str], str] | None:
    """The first non-'#' line split on its delimiter (tab, else comma) and that delimiter."""
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        delim = "\t" if "\t" in line else ","
        return next(csv.reader([line], delimiter=delim)), delim
    return None


def _cols(lines: list[str]) -> list[str]:
    head = _header_cells(lines)
    return [c.strip() for c in head[0]] if head else []


def _has(cols: list[str], *names: str) -> bool:
    return all(n in cols for n in names)


def detect_sample_sheet(lines: list[str]) -> dict | None:
    cols = _cols(lines)
    if not _has(cols, "File ID", "File Name", "Case ID", "Sample ID"):
        return None
    return {"generation": "portal 2.0" if "Tissue Type" in cols else "legacy"}


def detect_star_counts(lines: list[str]) -> dict | None:
    gene_model = lines[0][2:].strip() if lines and lines[0].startswith("# gene-model") else None
    if not _has(_cols(lines), "gene_id", "gene_name", "gene_type", "unstranded"):
        return None
    return {"gene_model": gene_model} if gene_model else {}


def detect_maf(lines: list[str]) -> dict | None:
    version = next((ln.split(None, 1)[1].strip() for ln in lines if ln.startswith("#version")), None)
    if not _has(_cols(lines), "Hugo_Symbol", "Tumor_Sample_Barcode"):
        return None
    return {"maf_version": version} if version else {}


def detect_gene_level_cn(lines: list[str]) -> dict | None:
    return {} if _has(_cols(lines), "gene_id", "gene_name", "chromosome", "copy_number") else None


def detect_gistic(lines: list[str]) -> dict | None:
    return {} if _has(_cols(lines), "Gene Symbol", "Locus ID", "Cytoband") else None


def detect_clinical(lines: list[str]) -> dict | None:
    cols = _cols(lines)
    if ("case_submitter_id" in cols or "cases.submitter_id" in cols) and (
            "vital_status" in cols or "demographic.vital_status" in cols):
        return {"generation": "dotted" if "cases.submitter_id" in cols else "flat"}
    return None


def detect_clinical_table(lines: list[str]) -> dict | None:
    """A plain clinical sheet (an id column plus clinical / outcome columns in the usual spellings)."""
    from omics.clinical import looks_like_clinical

    cols = _cols(lines)
    return {"n_columns": len(cols)} if cols and looks_like_clinical(cols) else None


def detect_compound_table(lines: list[str]) -> dict | None:
    cols = [c.lower() for c in _cols(lines)]
    hit = next((c for c in cols if c in SMILES_COLUMNS), None)
    return {"smiles_column": hit} if hit else None


def detect_feature_table(lines: list[str]) -> dict | None:
    """A table with an id column and at least one other column whose first rows are all numbers."""
    head = _header_cells(lines)
    if head is None:
        return None
    cols, delim = [c.strip() for c in head[0]], head[1]
    id_col = next((c for c in cols if c.lower() in ID_COLUMNS), None)
    if id_col is None:
        return None
    body = [r for r in csv.reader([ln for ln in lines[1:] if ln.strip() and not ln.startswith("#")],
                                   delimiter=delim) if len(r) == len(cols)][:5]
    if not body:
        return None

    def numeric(v: str) -> bool:
        try:
            float(v)
            return True
        except ValueError:
            return v.strip() in ("", "NA", "nan")

    n_numeric = sum(all(numeric(r[i]) for r in body) for i, c in enumerate(cols) if c != id_col)
    if n_numeric == 0:
        return None
    return {"id_column": id_col, "n_columns": len(cols), "n_numeric_columns": n_numeric}


# ------------------------------------------------------------------------------------- table
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("dicom_series", ("ct", "pet"), "folder", "imaging.dicom_series:read_dicom_series"),
    Format("dicom", ("ct", "pet"), "folder", "flows.stages.radiology:discover_radiology"),
    # a PACS: pulled into STORE/raw/<source> at the start of a run, then read as format 'dicom'
    Format("dicomweb", ("ct", "pet"), "remote", "flows.pacs.pull:pull_dicomweb"),
    Format("dimse", ("ct", "pet"), "remote", "flows.pacs.pull:pull_dimse"),
    Format("openslide", ("wsi",), "folder", "imaging.slide:open_slide"),
    Format("visium_h5ad", ("spatial",), "folder", "omics.spatial:read_visium_h5ad"),
    # Space Ranger 'outs' folders and/or h5ad files, one item per patient (omics.spatial.read_spatial takes both)
    Format("visium", ("spatial",), "folder", "omics.spatial:read_spatial"),
    Format("gdc_star_counts", ("expression",), "folder", "omics.gdc:read_expression_cohort", True,
           detect_star_counts),
    Format("gdc_maf", ("mutations",), "file", "omics.gdc:read_maf", detect=detect_maf),
    Format("gdc_maf_download", ("mutations",), "folder", "omics.gdc_download:read_maf_download", True),
    Format("gdc_gene_level_copy_number", ("copy_number",), "folder",
           "omics.gdc_download:read_copy_number_download", True, detect_gene_level_cn),
    Format("gistic_gene_thresholded", ("copy_number",), "file", "omics.gdc:read_copy_number",
           detect=detect_gistic),
    Format("gdc_clinical", ("clinical",), "file", "omics.gdc:read_clinical", detect=detect_clinical),
    # a site's own clinical sheet (CSV/TSV): outcome columns become labels, never features
    Format("clinical_table", ("clinical",), "file", "omics.clinical:read_clinical_table",
           detect=detect_clinical_table),
    Format("gdc_sample_sheet", (), "file", "omics.gdc:read_sample_sheet", detect=detect_sample_sheet),
    Format("compound_table", ("compounds",), "file", "molecules.io:read_compound_table",
           detect=detect_compound_table),
    Format("sdf", ("compounds",), "file", "molecules.io:read_sdf"),  # SD files (.sdf, .sdf.gz) of a compound library
    Format("feature_table", ("features",), "file", "flows.stages.features:read_feature_table",
           detect=detect_feature_table),
    Format("tile_features_h5", ("features",), "folder", "flows.stages.features:read_tile_feature_bag"),
)}
# order in which text sniffers are tried (most specific first; feature_table is the catch-all)
TEXT_SNIFF_ORDER = ("gdc_sample_sheet", "gdc_star_counts", "gdc_maf", "gdc_gene_level_copy_number",
                    "gistic_gene_thresholded", "gdc_clinical", "clinical_table", "compound_table", "feature_table")


def modality_formats() -> dict[str, tuple[str, ...]]:
    """modality -> the formats that can feed it (the catalog's validation table)."""
    out: dict[str, list[str]] = {}
    for f in FORMATS.values():
        for m in f.modalities:
            out.setdefault(m, []).append(f.name)
    return {m: tuple(v) for m, v in out.items()}


def text_head(path: Path, head: bytes, max_lines: int = 8) -> list[str] | None:
    """The first lines of a text table, through gzip or a one-member zip; None when not text.

    Zip members are opened by name and never extracted (real archives carry names like '../x.csv').
    """
    try:
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                raw = f.read(65536)
        elif head[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                if len(members) != 1:
                    return None
                with z.open(members[0]) as f:
                    raw = f.read(65536)
        else:
            raw = head
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"compressed file cannot be read: {exc}") from exc
    if b"\x00" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    return lines[:max_lines] if len(lines) > 1 or text.endswith("\n") else None


def sniff_table(lines: list[str]) -> tuple[str, dict] | None:
    """The first format whose sniffer recognises these lines, with its facts."""
    for name in TEXT_SNIFF_ORDER:
        facts = FORMATS[name].detect(lines)  # type: ignore[misc]
        if facts is not None:
            return name, facts
    return None


__all__ = ["FORMATS", "Format", "modality_formats", "sniff_table", "text_head"]
