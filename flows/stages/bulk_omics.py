"""Stage: GDC expression / MAF / copy number / clinical -> cohort matrices and per-gene evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd

from flows.catalog.schema import Catalog, Source
from fusion.errors import OmicsFormatError
from omics.cohort import highly_variable, normalise_counts, tumour_samples
from omics.de import differential_expression
from omics.gdc import mutation_matrix, read_clinical, read_copy_number, read_expression_cohort, read_maf
from omics.gdc_download import read_copy_number_download, read_maf_download
from omics.survival import cox_univariate


@dataclass
class BulkOmics:
    """The cohort's bulk omics: expression (all samples), tumour expression, tables, errors."""

    expression: ad.AnnData            # samples x genes, X = log2(CPM+1), layers['counts']
    tumour: ad.AnnData                # one primary tumour per patient, obs indexed by patient id
    clinical: pd.DataFrame            # patient_id -> os_time_days, os_event, primary_diagnosis, ...
    copy_number: pd.DataFrame | None  # genes x patients (-2..2)
    maf: pd.DataFrame | None
    errors: list[str] = field(default_factory=list)           # expression / clinical records skipped
    skipped: list[dict[str, str]] = field(default_factory=list)  # {source, file, error}: MAF / CN files or sources


def _optional_source(src: Source | None, read: Callable[[Source], tuple[pd.DataFrame, list[str]]],
                     skipped: list[dict[str, str]]) -> pd.DataFrame | None:
    """Read an optional source; a bad file drops only what it holds (the whole source when it is one file)."""
    if src is None:
        return None
    try:
        table, errors = read(src)
    except OmicsFormatError as exc:
        skipped.append({"source": src.name, "file": str(src.path), "error": f"OmicsFormatError: {exc}"})
        return None
    skipped += [{"source": src.name, "file": str(src.path), "error": e} for e in errors]
    return table


def _read_maf_source(src: Source) -> tuple[pd.DataFrame, list[str]]:
    if src.format == "gdc_maf_download":
        return read_maf_download(src.sample_sheet, src.path)
    return read_maf(src.path), []


def _read_cn_source(src: Source) -> tuple[pd.DataFrame, list[str]]:
    if src.format == "gdc_gene_level_copy_number":
        return read_copy_number_download(src.sample_sheet, src.path)
    return read_copy_number(src.path), []


def read_bulk_omics(catalog: Catalog) -> BulkOmics:
    """Read every bulk omics source of the catalog.

    Bad expression sample files, MAF and copy-number files (or whole single-file MAF / copy-number
    sources) are reported in ``skipped``/``errors`` and dropped. Expression and clinical are required:
    when none of their content can be read, OmicsFormatError names the file and the run stops
    (the clinical table carries the labels every experiment needs).
    """
    src = catalog.by_modality("expression")
    expr, errors = read_expression_cohort(src.sample_sheet, src.path)
    expr = normalise_counts(expr)
    tumour = tumour_samples(expr)
    clinical = read_clinical(catalog.by_modality("clinical").path)
    errors += list(clinical.attrs.get("errors", []))
    skipped: list[dict[str, str]] = []
    cn = _optional_source(catalog.by_modality("copy_number"), _read_cn_source, skipped)
    maf = _optional_source(catalog.by_modality("mutations"), _read_maf_source, skipped)
    return BulkOmics(expression=expr, tumour=tumour, clinical=clinical, copy_number=cn, maf=maf, errors=errors,
                     skipped=skipped)


def expression_features(bulk: BulkOmics, n_hvg: int) -> pd.DataFrame:
    """Patients x highly-variable genes, log2(CPM+1) of the primary tumour sample (fusion input)."""
    hv = highly_variable(bulk.tumour, n_hvg)
    x = hv.X.toarray() if hasattr(hv.X, "toarray") else np.asarray(hv.X)
    return pd.DataFrame(x, index=hv.obs_names.astype(str), columns=hv.var_names.astype(str))


def omics_evidence(bulk: BulkOmics) -> pd.DataFrame:
    """Per gene: DE t (tumour vs normal), Cox z (tumour expression vs overall survival),
    amplification frequency and non-silent mutation frequency across tumours."""
    genes = list(bulk.expression.var_names)
    ev = pd.DataFrame(index=pd.Index(genes, name="gene"))
    if bool(bulk.expression.obs["is_normal"].any()):
        de = differential_expression(bulk.expression, group_key="is_tumour")
        ev["de"] = de["t"].reindex(genes)
    patients = [p for p in bulk.tumour.obs_names if p in bulk.clinical.index]
    if len(patients) >= 10:
        tum = bulk.tumour[patients]
        x = tum.X.toarray() if hasattr(tum.X, "toarray") else np.asarray(tum.X)
        clin = bulk.clinical.loc[patients]
        cox = cox_univariate(x, clin["os_time_days"].to_numpy(float), clin["os_event"].to_numpy(int),
                             genes=list(tum.var_names))
        ev["survival"] = cox["z"].reindex(genes)
    tumours = list(bulk.tumour.obs_names)
    if bulk.copy_number is not None:
        cn = bulk.copy_number.reindex(columns=[p for p in tumours if p in bulk.copy_number.columns])
        ev["copy_number"] = (cn >= 1).mean(axis=1).reindex(genes)
    if bulk.maf is not None:
        mm = mutation_matrix(bulk.maf, tumours, genes)
        ev["mutation"] = mm.mean(axis=0).reindex(genes)
    return ev
