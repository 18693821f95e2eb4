"""Per-sample plain tables cut at a line boundary (an interrupted copy ends between two rows): the file parses
as a valid, shorter table, so only the other samples of the cohort tell it apart. It is named and skipped,
whichever position it has in the sample sheet (the first file used to be the reference gene list)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.synthetic.gdc_writer import new_file_uuid, write_gene_level_copy_number, write_sample_sheet
from omics.gdc import gene_list_problem, majority_gene_list, read_expression_cohort
from omics.gdc_download import read_copy_number_download
from tests.omics.test_gdc import GENE_IDS, GENE_TYPES, _cohort, _portal2_row


def _cut_lines(path, keep_last: int) -> int:
    """Drop the last ``keep_last`` lines of ``path`` at a line boundary; the number of lines left."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-keep_last]))
    return len(lines) - keep_last


@pytest.mark.parametrize("which", [0, 3])
def test_star_counts_cut_at_a_line_boundary_is_named(tmp_path, which):
    sheet, files, rows, truth = _cohort(tmp_path)
    cut = files / rows[which]["File ID"] / rows[which]["File Name"]
    _cut_lines(cut, 3)  # the last 3 genes gone; the file still ends with a line end
    assert cut.read_bytes().endswith(b"\n")
    adata, errors = read_expression_cohort(sheet, files)
    assert rows[which]["Sample ID"] not in adata.obs_names
    assert adata.n_obs == 5 and adata.n_vars == 7  # the other five samples, every protein-coding gene
    assert len(errors) == 1 and rows[which]["File Name"] in errors[0]
    assert "truncated at a line boundary" in errors[0] and "5 of the 8 genes that 5 other sample(s)" in errors[0]
    coding = np.array(GENE_TYPES) == "protein_coding"
    for sample in adata.obs_names:  # nothing else lost: exact counts of the untouched samples
        np.testing.assert_array_equal(adata[sample].X.ravel(), truth[sample][coding].astype(np.float32))


def _cn_cohort(tmp_path, n: int = 4):
    rng = np.random.default_rng(3)
    genes, ids = ["EGFR", "CDKN2A", "MYC", "TP53", "PTEN", "KRAS"], [f"ENSG{i:011d}.1" for i in range(6)]
    files, rows, paths = tmp_path / "dl", [], []
    for p in range(1, n + 1):
        pid, fid = f"TCGA-FX-{p:04d}", new_file_uuid(rng)
        name = f"TCGA-FX.{fid}.ascat3.gene_level_copy_number.v36.tsv"
        paths.append(write_gene_level_copy_number(files / fid / name, ids, genes, np.full(6, 4)))
        rows.append(_portal2_row(fid, name, "Copy Number Variation", "Gene Level Copy Number", pid,
                                 f"{pid}-01A, {pid}-10A", "Tumor, Normal", "Primary, Not Applicable",
                                 "Solid Tissue, Peripheral Blood Components NOS"))
    return write_sample_sheet(tmp_path / "sheet.tsv", rows), files, paths, genes


def test_copy_number_cut_at_a_line_boundary_is_named_not_read_as_diploid(tmp_path):
    sheet, files, paths, genes = _cn_cohort(tmp_path)
    _cut_lines(paths[0], 2)  # TP53's row survives, PTEN and KRAS are gone
    calls, errors = read_copy_number_download(sheet, files)
    # before: the patient's missing genes were filled as 0 (diploid); now the file is named and dropped
    assert list(calls.columns) == ["TCGA-FX-0002", "TCGA-FX-0003", "TCGA-FX-0004"]
    assert (calls.loc[genes].to_numpy() == 1).all()  # 4 copies = gain, for every gene of every patient read
    assert len(errors) == 1 and paths[0].name in errors[0]
    assert "truncated at a line boundary: column 'gene_name' stops after 4 of the 6 genes" in errors[0]


def test_majority_gene_list_ties_go_to_the_longest():
    full, short = np.array(GENE_IDS), np.array(GENE_IDS[:5])
    assert majority_gene_list([short, full]) == 1  # one sample each: the longer list is the reference
    assert majority_gene_list([short, short, full]) == 0  # two files agree: they are the reference
    assert gene_list_problem(full, full, 2, "c") is None
    other = np.array(GENE_IDS[::-1])
    assert gene_list_problem(other, full, 2, "c") == "c differs from the gene list of 2 other sample(s) (8 vs 8 genes)"
