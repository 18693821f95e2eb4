"""Stage: GDC expression / MAF / copy number / clinical -> cohort matrices and per-gene evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd

from flows.catalog.schema import Catalog, Source
from flows.skipped import Skipped
from fusion.errors import OmicsFormatError
from omics.cohort import highly_variable, normalise_counts, tumour_samples
from omics.gdc import read_clinical, read_copy_number, read_expression_cohort, read_maf
from omics.gdc_download import read_copy_number_download, read_maf_download


CLINICAL_COLUMNS = ("os_time_days", "os_event", "primary_diagnosis")
DAYS_PER_MONTH = 30.4375


@dataclass
class BulkOmics:
    """The cohort's bulk omics: expression (all samples), tumour expression, tables, errors (each optional:
    a site may send only some of them)."""

    expression: ad.AnnData | None     # samples x genes, X = log2(CPM+1), layers['counts']
    tumour: ad.AnnData | None         # one primary tumour per patient, obs indexed by patient id
    clinical: pd.DataFrame            # patient_id -> os_time_days, os_event, primary_diagnosis, ... (may be empty)
    copy_number: pd.DataFrame | None  # genes x patients (-2..2)
    maf: pd.DataFrame | None
    errors: list[str] = field(default_factory=list)           # expression / clinical records skipped
    skipped: list[Skipped] = field(default_factory=list)  # bad MAF / CN files or sources


def empty_clinical() -> pd.DataFrame:
    """A clinical table with no patient (a cohort without a clinical source)."""
    return pd.DataFrame({"os_time_days": pd.Series(dtype=float), "os_event": pd.Series(dtype="Int64"),
                         "primary_diagnosis": pd.Series(dtype=object)}, index=pd.Index([], name="patient_id"))


def read_clinical_source(src: Source | None, labels: dict | None = None) -> pd.DataFrame:
    """The cohort's clinical table in one shape, whatever the source: GDC clinical.tsv, or a site's plain
    clinical sheet whose label columns the run config's ``labels:`` names (else the usual spellings).

    Columns: ``os_time_days``, ``os_event`` (1 = event), ``primary_diagnosis`` and the sheet's clinical
    covariates; outcome columns are labels, never covariates. Ids go through the source's id map.
    """
    if src is None:
        return empty_clinical()
    if src.format != "clinical_table":
        clinical = read_clinical(src.path)
        clinical.index = [src.patient_id(str(p)) for p in clinical.index]
        clinical.index.name = "patient_id"
        return clinical
    from omics.clinical import ClinicalLabels, read_clinical_table

    table = read_clinical_table(src.path, ClinicalLabels.from_config(labels or {}), id_map=src.id_map)
    lab = table.labels
    out = pd.DataFrame({"os_time_days": lab["time_months"].astype(float) * DAYS_PER_MONTH,
                        "os_event": lab["event"].astype("Int64"),
                        "primary_diagnosis": lab["diagnosis"]}, index=lab.index)
    out = out.join(table.covariates.drop(columns=[c for c in CLINICAL_COLUMNS if c in table.covariates], errors="ignore"))
    out.index.name = "patient_id"
    out.attrs["errors"] = list(getattr(table, "errors", []) or [])
    return out


def _optional_source(src: Source | None, read: Callable[[Source], tuple[pd.DataFrame, list[str]]],
                     skipped: list[Skipped]) -> pd.DataFrame | None:
    """Read an optional source; a bad file drops only what it holds (the whole source when it is one file)."""
    if src is None:
        return None
    try:
        table, errors = read(src)
    except OmicsFormatError as exc:
        skipped.append(Skipped.of(src.name, src.path, exc))
        return None
    skipped += [Skipped(src.name, str(src.path), e) for e in errors]
    return table


def _read_maf_source(src: Source) -> tuple[pd.DataFrame, list[str]]:
    if src.format == "gdc_maf_download":
        return read_maf_download(src.sample_sheet, src.path)
    return read_maf(src.path), []


def _read_cn_source(src: Source) -> tuple[pd.DataFrame, list[str]]:
    if src.format == "gdc_gene_level_copy_number":
        return read_copy_number_download(src.sample_sheet, src.path)
    return read_copy_number(src.path), []


def read_bulk_omics(catalog: Catalog, labels: dict | None = None) -> BulkOmics:
    """Read every bulk omics source of the catalog; each one is optional.

    Bad expression sample files, MAF and copy-number files (or whole single-file MAF / copy-number
    sources) are reported in ``skipped``/``errors`` and dropped. An expression or clinical source none of
    whose content can be read raises OmicsFormatError naming the file.
    """
    src = catalog.by_modality("expression")
    expr = tumour = None
    errors: list[str] = []
    if src is not None:
        expr, errors = read_expression_cohort(src.sample_sheet, src.path)
        expr = normalise_counts(expr)
        tumour = tumour_samples(expr)
    clinical = read_clinical_source(catalog.by_modality("clinical"), labels)
    errors += list(clinical.attrs.get("errors", []))
    skipped: list[Skipped] = []
    cn = _optional_source(catalog.by_modality("copy_number"), _read_cn_source, skipped)
    maf = _optional_source(catalog.by_modality("mutations"), _read_maf_source, skipped)
    return BulkOmics(expression=expr, tumour=tumour, clinical=clinical, copy_number=cn, maf=maf, errors=errors,
                     skipped=skipped)


def expression_features(bulk: BulkOmics, n_hvg: int) -> pd.DataFrame:
    """Patients x highly-variable genes, log2(CPM+1) of the primary tumour sample (fusion input)."""
    hv = highly_variable(bulk.tumour, n_hvg)
    x = hv.X.toarray() if hasattr(hv.X, "toarray") else np.asarray(hv.X)
    return pd.DataFrame(x, index=hv.obs_names.astype(str), columns=hv.var_names.astype(str))
