import numpy as np
import pandas as pd
import pytest

from flows.synthetic.gdc_writer import (
    new_file_uuid,
    write_clinical,
    write_copy_number,
    write_maf,
    write_sample_sheet,
    write_star_counts,
)
from fusion.errors import OmicsFormatError
from omics.gdc import (
    mutation_matrix,
    read_clinical,
    read_copy_number,
    read_expression_cohort,
    read_maf,
    read_sample_sheet,
    read_star_counts,
)

GENE_IDS = [f"ENSG{i:011d}.{i % 7 + 1}" for i in range(1, 9)]
GENE_NAMES = ["TP53", "EGFR", "KRAS", "MYC", "MALAT1", "PTEN", "TP53", "CDK4"]  # TP53 twice (PAR-style duplicate)
GENE_TYPES = ["protein_coding"] * 4 + ["lncRNA"] + ["protein_coding"] * 3


def _counts(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5000, size=len(GENE_IDS))


def test_star_counts_round_trip(tmp_path):
    counts = _counts(1)
    path = write_star_counts(tmp_path / "a.tsv", GENE_IDS, GENE_NAMES, GENE_TYPES, counts, seed=3)
    lines = path.read_text().splitlines()
    assert lines[0] == "# gene-model: GENCODE v36"
    assert [line.split("\t")[0] for line in lines[2:6]] == ["N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous"]
    df = read_star_counts(path)
    assert list(df["gene_id"]) == GENE_IDS
    np.testing.assert_array_equal(df["unstranded"].to_numpy(), counts)
    np.testing.assert_array_equal(df["stranded_first"] + df["stranded_second"], counts)
    assert df["tpm_unstranded"].sum() == pytest.approx(1e6, rel=1e-4)
    # the writer is deterministic given its seed
    again = write_star_counts(tmp_path / "b.tsv", GENE_IDS, GENE_NAMES, GENE_TYPES, counts, seed=3)
    assert again.read_text() == path.read_text()
    assert not list(tmp_path.glob(".*tmp*"))


def test_star_counts_missing_column_and_bad_count(tmp_path):
    path = write_star_counts(tmp_path / "a.tsv", GENE_IDS, GENE_NAMES, GENE_TYPES, _counts(1))
    text = path.read_text()
    broken = tmp_path / "missing.tsv"
    broken.write_text(text.replace("stranded_second", "strand2"))
    with pytest.raises(OmicsFormatError, match=r"missing\.tsv.*stranded_second"):
        read_star_counts(broken)
    lines = text.splitlines()
    fields = lines[8].split("\t")
    fields[3] = "12x"
    lines[8] = "\t".join(fields)
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(OmicsFormatError, match=r"bad\.tsv.*'unstranded'.*12x"):
        read_star_counts(bad)


def _cohort(tmp_path, n_patients=3):
    rng = np.random.default_rng(0)
    files = tmp_path / "files"
    rows, truth = [], {}
    for p in range(1, n_patients + 1):
        for code, label in (("01A", "Primary Tumor"), ("11A", "Solid Tissue Normal")):
            sample = f"TCGA-FX-{p:04d}-{code}"
            file_id = new_file_uuid(rng)
            name = f"{new_file_uuid(rng)}.rna_seq.augmented_star_gene_counts.tsv"
            counts = rng.integers(0, 1000, size=len(GENE_IDS))
            write_star_counts(files / file_id / name, GENE_IDS, GENE_NAMES, GENE_TYPES, counts, seed=p)
            truth[sample] = counts
            rows.append(
                {
                    "File ID": file_id,
                    "File Name": name,
                    "Data Category": "Transcriptome Profiling",
                    "Data Type": "Gene Expression Quantification",
                    "Project ID": "TCGA-FX",
                    "Case ID": f"TCGA-FX-{p:04d}",
                    "Sample ID": sample,
                    "Sample Type": label,
                }
            )
    sheet = write_sample_sheet(tmp_path / "gdc_sample_sheet.tsv", rows)
    return sheet, files, rows, truth


def test_expression_cohort_reads_exact_counts(tmp_path):
    sheet, files, rows, truth = _cohort(tmp_path)
    assert list(read_sample_sheet(sheet)["Sample ID"]) == [r["Sample ID"] for r in rows]
    adata, errors = read_expression_cohort(sheet, files)
    assert errors == []
    assert adata.shape == (6, 7)  # the lncRNA is dropped
    assert "MALAT1" not in adata.var_names
    assert list(adata.var_names) == ["TP53", "EGFR", "KRAS", "MYC", "PTEN", "TP53-1", "CDK4"]
    coding = np.array(GENE_TYPES) == "protein_coding"
    for sample, counts in truth.items():
        np.testing.assert_array_equal(adata[sample].X.ravel(), counts[coding].astype(np.float32))
    assert adata.X.dtype == np.float32
    assert adata.obs.loc["TCGA-FX-0002-11A", "patient_id"] == "TCGA-FX-0002"
    assert adata.obs.loc["TCGA-FX-0002-11A", "sample_type_code"] == 11
    assert adata.obs.loc["TCGA-FX-0002-01A", "sample_type"] == "Primary Tumor"
    assert bool(adata.obs.loc["TCGA-FX-0002-01A", "is_tumour"])
    assert list(adata.var["gene_id"]) == [g for g, keep in zip(GENE_IDS, coding) if keep]
    everything, _ = read_expression_cohort(sheet, files, gene_types=None)
    assert everything.n_vars == 8


def test_corrupt_file_in_cohort_is_reported_and_skipped(tmp_path):
    sheet, files, rows, truth = _cohort(tmp_path)
    corrupt = files / rows[2]["File ID"] / rows[2]["File Name"]
    corrupt.write_text("# gene-model: GENCODE v36\nthis is not a counts table\n")
    missing = files / rows[3]["File ID"] / rows[3]["File Name"]
    missing.unlink()
    adata, errors = read_expression_cohort(sheet, files)
    assert adata.n_obs == 4
    assert rows[2]["Sample ID"] not in adata.obs_names and rows[3]["Sample ID"] not in adata.obs_names
    assert len(errors) == 2
    assert rows[2]["File Name"] in errors[0] and "gene_id" in errors[0]
    assert rows[3]["File Name"] in errors[1] and "not found" in errors[1]
    assert adata.uns["errors"] == errors


def test_sample_sheet_missing_column(tmp_path):
    path = tmp_path / "sheet.tsv"
    pd.DataFrame({"File ID": ["x"], "File Name": ["y"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(OmicsFormatError, match=r"sheet\.tsv.*Data Category"):
        read_sample_sheet(path)


def _maf_records():
    return pd.DataFrame(
        {
            "Hugo_Symbol": ["TP53", "TP53", "KRAS", "EGFR", "PTEN", "MYC"],
            "Chromosome": ["chr17", "chr17", "chr12", "chr7", "chr10", "chr8"],
            "Start_Position": [7675088, 7674220, 25245350, 55191822, 87933147, 127736231],
            "Variant_Classification": [
                "Missense_Mutation",
                "Silent",
                "Missense_Mutation",
                "In_Frame_Del",
                "3'UTR",
                "Nonsense_Mutation",
            ],
            "Variant_Type": ["SNP", "SNP", "SNP", "DEL", "SNP", "SNP"],
            "Reference_Allele": ["C", "G", "C", "GGAATTAAGAGAAGC", "T", "C"],
            "Tumor_Seq_Allele2": ["T", "A", "A", "-", "C", "T"],
            "Tumor_Sample_Barcode": [
                "TCGA-FX-0001-01A-11D-A000-08",
                "TCGA-FX-0002-01A-11D-A000-08",
                "TCGA-FX-0002-01A-11D-A000-08",
                "TCGA-FX-0003-01A-11D-A000-08",
                "TCGA-FX-0003-01A-11D-A000-08",
                "TCGA-FX-0004-01A-11D-A000-08",
            ],
            "HGVSp_Short": ["p.R175H", "p.P72P", "p.G12V", "p.E746_A750del", "", "p.Q10*"],
        }
    )


def test_maf_round_trip_and_non_silent_matrix(tmp_path):
    path = write_maf(tmp_path / "x.maf", _maf_records())
    text = path.read_text()
    assert text.startswith("#version gdc-1.0.0\n")
    maf = read_maf(path)
    assert len(maf) == 6
    assert maf.loc[0, "NCBI_Build"] == "GRCh38"
    assert maf.loc[3, "End_Position"] == str(55191822 + 14)
    assert maf.loc[0, "Matched_Norm_Sample_Barcode"] == "TCGA-FX-0001-10A-01D-A000-08"
    assert list(maf["patient_id"])[:2] == ["TCGA-FX-0001", "TCGA-FX-0002"]
    patients = ["TCGA-FX-0001", "TCGA-FX-0002", "TCGA-FX-0003", "TCGA-FX-0004", "TCGA-FX-0005"]
    genes = ["TP53", "KRAS", "EGFR", "PTEN", "MYC", "CDK4"]
    m = mutation_matrix(maf, patients, genes)
    expected = pd.DataFrame(False, index=patients, columns=genes)
    expected.loc["TCGA-FX-0001", "TP53"] = True  # missense
    expected.loc["TCGA-FX-0002", "KRAS"] = True  # its TP53 is silent
    expected.loc["TCGA-FX-0003", "EGFR"] = True  # in-frame deletion; 3'UTR PTEN does not count
    expected.loc["TCGA-FX-0004", "MYC"] = True
    assert m.dtypes.eq(bool).all()
    np.testing.assert_array_equal(m.to_numpy(), expected.to_numpy())


def test_maf_missing_column(tmp_path):
    path = write_maf(tmp_path / "x.maf", _maf_records())
    text = path.read_text().replace("Tumor_Sample_Barcode", "Tumor_Sample")
    path.write_text(text)
    with pytest.raises(OmicsFormatError, match=r"x\.maf.*Tumor_Sample_Barcode"):
        read_maf(path)


def test_copy_number_round_trip(tmp_path):
    calls = pd.DataFrame(
        [[0, -2, 1], [2, 0, 0], [-1, 1, 0]],
        index=["EGFR", "CDKN2A", "MYC"],
        columns=["TCGA-FX-0001-01A-11D-A000-01", "TCGA-FX-0002-01A-11D-A000-01", "TCGA-FX-0001-01B-11D-A000-01"],
    )
    path = write_copy_number(tmp_path / "all_thresholded.by_genes.txt", calls, [1956, 1029, 4609], ["7p11.2", "9p21.3", "8q24.21"])
    table = read_copy_number(path)
    assert list(table.columns) == ["TCGA-FX-0001", "TCGA-FX-0002"]  # the second TCGA-FX-0001 aliquot is dropped
    assert list(table.index) == ["EGFR", "CDKN2A", "MYC"]
    np.testing.assert_array_equal(table.to_numpy(), [[0, -2], [2, 0], [-1, 1]])
    bad = tmp_path / "bad.txt"
    bad.write_text(path.read_text().replace("\t-2\t", "\t3\t"))
    with pytest.raises(OmicsFormatError, match=r"bad\.txt.*TCGA-FX-0002-01A"):
        read_copy_number(bad)


def test_clinical_missing_values_and_survival(tmp_path):
    df = pd.DataFrame(
        {
            "case_submitter_id": ["TCGA-FX-0001", "TCGA-FX-0001", "TCGA-FX-0002", "TCGA-FX-0003", "TCGA-FX-0004", "TCGA-FX-0005"],
            "project_id": ["TCGA-FX"] * 6,
            "vital_status": ["Dead", "Dead", "Alive", "Alive", "Dead", "Not Reported"],
            "days_to_death": [400, 400, np.nan, np.nan, np.nan, np.nan],
            "days_to_last_follow_up": [np.nan, np.nan, 1200, np.nan, 300, 50],
            "primary_diagnosis": ["Adenocarcinoma, NOS"] * 6,
            "age_at_index": [61, 61, 55, np.nan, 70, 40],
            "gender": ["female", "female", "male", "male", "female", "male"],
            "treatment_type": ["Pharmaceutical Therapy, NOS", "Radiation Therapy, NOS", "", "", "", ""],
        }
    )
    path = write_clinical(tmp_path / "clinical.tsv", df)
    text = path.read_text()
    assert "'--" in text
    clinical = read_clinical(path)
    # TCGA-FX-0001 appears twice (one row per treatment): one patient. 0003 has no time, 0005 no known status.
    assert list(clinical.index) == ["TCGA-FX-0001", "TCGA-FX-0002", "TCGA-FX-0004"]
    assert clinical.loc["TCGA-FX-0001", "os_time_days"] == 400 and clinical.loc["TCGA-FX-0001", "os_event"] == 1
    assert clinical.loc["TCGA-FX-0002", "os_time_days"] == 1200 and clinical.loc["TCGA-FX-0002", "os_event"] == 0
    # dead without days_to_death falls back to the last follow-up
    assert clinical.loc["TCGA-FX-0004", "os_time_days"] == 300 and clinical.loc["TCGA-FX-0004", "os_event"] == 1
    assert np.isnan(clinical.loc["TCGA-FX-0002", "days_to_death"])
    assert clinical.loc["TCGA-FX-0002", "gender"] == "male"
    errors = clinical.attrs["errors"]
    assert len(errors) == 2
    assert any("TCGA-FX-0003" in e and "neither" in e for e in errors)
    assert any("TCGA-FX-0005" in e and "vital_status" in e for e in errors)


def test_clinical_missing_column(tmp_path):
    path = tmp_path / "clinical.tsv"
    pd.DataFrame({"case_submitter_id": ["TCGA-FX-0001"], "project_id": ["TCGA-FX"], "vital_status": ["Alive"],
                  "days_to_death": ["'--"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(OmicsFormatError, match=r"clinical\.tsv.*days_to_last_follow_up"):
        read_clinical(path)


# ------------------------------------------------------------- gdc-client downloads (GDC-FORMATS.md)
def _portal2_row(file_id, name, category, data_type, case, samples, tissue, descriptor, specimen):
    return {"File ID": file_id, "File Name": name, "Data Category": category, "Data Type": data_type,
            "Project ID": "TCGA-FX", "Case ID": case, "Sample ID": samples, "Tissue Type": tissue,
            "Tumor Descriptor": descriptor, "Specimen Type": specimen, "Preservation Method": "Unknown"}


def test_portal2_sample_sheet_and_gdc_client_layout(tmp_path):
    """Portal 2.0 sheet (no 'Sample Type'), files in <File ID>/<File Name>, a '.partial' download skipped."""
    rng = np.random.default_rng(5)
    files, rows, truth = tmp_path / "download", [], {}
    for p, (code, tissue, desc) in enumerate([("01A", "Tumor", "Primary"), ("11A", "Normal", "Not Applicable"),
                                              ("01A", "Tumor", "Primary")], start=1):
        fid, name = new_file_uuid(rng), f"{new_file_uuid(rng)}.rna_seq.augmented_star_gene_counts.tsv"
        counts = rng.integers(0, 900, size=len(GENE_IDS))
        target = files / fid / name
        write_star_counts(target, GENE_IDS, GENE_NAMES, GENE_TYPES, counts, seed=p)
        (files / fid / "logs").mkdir()
        (files / fid / "logs" / f"{name}.parcel").write_text("parcel log")
        if p == 3:  # still downloading: gdc-client writes <name>.partial and renames when complete
            target.rename(target.with_name(name + ".partial"))
        truth[f"TCGA-FX-{p:04d}-{code}"] = counts
        rows.append(_portal2_row(fid, name, "Transcriptome Profiling", "Gene Expression Quantification",
                                 f"TCGA-FX-{p:04d}", f"TCGA-FX-{p:04d}-{code}", tissue, desc, "Solid Tissue"))
    sheet = write_sample_sheet(tmp_path / "gdc_sample_sheet.2024-01-15.tsv", rows)
    assert sheet.read_text().splitlines()[0].split("\t")[-4:] == [
        "Tissue Type", "Tumor Descriptor", "Specimen Type", "Preservation Method"]
    assert list(read_sample_sheet(sheet)["Sample Type"]) == ["Primary Tumor", "Normal", "Primary Tumor"]
    adata, errors = read_expression_cohort(sheet, files)
    assert list(adata.obs_names) == ["TCGA-FX-0001-01A", "TCGA-FX-0002-11A"]
    assert len(errors) == 1 and rows[2]["File Name"] in errors[0] and "not found" in errors[0]
    coding = np.array(GENE_TYPES) == "protein_coding"
    np.testing.assert_array_equal(adata["TCGA-FX-0002-11A"].X.ravel(), truth["TCGA-FX-0002-11A"][coding])
    assert bool(adata.obs.loc["TCGA-FX-0002-11A", "is_normal"])


def test_per_aliquot_maf_gz_merged_and_bad_one_skipped(tmp_path):
    from omics.gdc_download import read_maf_download

    rng = np.random.default_rng(2)
    recs = _maf_records()
    files, rows = tmp_path / "download", []
    for k, (aliquot, part) in enumerate(recs.groupby("Tumor_Sample_Barcode", sort=True)):
        fid = new_file_uuid(rng)
        name = f"TCGA-FX.{new_file_uuid(rng)}.wxs.aliquot_ensemble_masked.maf.gz"
        write_maf(files / fid / name, part, version="gdc-2.0.0-aliquot-merged-masked")
        pid = aliquot[:12]
        rows.append(_portal2_row(fid, name, "Simple Nucleotide Variation", "Masked Somatic Mutation", pid,
                                 f"{pid}-10A, {aliquot[:16]}", "Normal, Tumor", "Not Applicable, Primary",
                                 "Peripheral Blood Components NOS, Solid Tissue"))
    broken = files / rows[1]["File ID"] / rows[1]["File Name"]
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated gzip
    sheet = write_sample_sheet(tmp_path / "sheet.tsv", rows)
    import gzip
    first = gzip.decompress((files / rows[0]["File ID"] / rows[0]["File Name"]).read_bytes()).decode()
    assert first.startswith("#version gdc-2.0.0-aliquot-merged-masked\n")
    maf, errors = read_maf_download(sheet, files)
    assert len(errors) == 1 and rows[1]["File Name"] in errors[0]
    # aliquots 0001, 0003 (2 records), 0004 read; 0002's two records were in the broken file
    assert sorted(maf["patient_id"]) == ["TCGA-FX-0001", "TCGA-FX-0003", "TCGA-FX-0003", "TCGA-FX-0004"]
    assert set(maf["Hugo_Symbol"]) == {"TP53", "EGFR", "PTEN", "MYC"}


def test_gene_level_copy_number_by_aliquot_with_pipeline_choice(tmp_path):
    from flows.synthetic.gdc_writer import write_gene_level_copy_number
    from omics.gdc_download import copy_number_calls, read_copy_number_download

    rng = np.random.default_rng(3)
    genes, ids = ["EGFR", "CDKN2A", "MYC", "TP53"], [f"ENSG{i:011d}.1" for i in range(4)]
    plan = [("TCGA-FX-0001", "ascat3", [2, 0, 7, 3]), ("TCGA-FX-0001", "absolute_liftover", [9, 9, 9, 9]),
            ("TCGA-FX-0002", "ascat2", [1, 2, 4, 5])]
    files, rows = tmp_path / "dl", []
    for pid, pipeline, copies in plan:
        fid = new_file_uuid(rng)
        name = f"TCGA-FX.{fid}.{pipeline}.gene_level_copy_number.v36.tsv"
        write_gene_level_copy_number(files / fid / name, ids, genes, np.array(copies))
        rows.append(_portal2_row(fid, name, "Copy Number Variation", "Gene Level Copy Number", pid,
                                 f"{pid}-01A, {pid}-10A", "Tumor, Normal", "Primary, Not Applicable",
                                 "Solid Tissue, Peripheral Blood Components NOS"))
    # the sheet lists the absolute_liftover file first: the ascat3 one must still win for 0001
    sheet = write_sample_sheet(tmp_path / "sheet.tsv", [rows[1], rows[0], rows[2]])
    calls, errors = read_copy_number_download(sheet, files)
    assert errors == []
    assert list(calls.columns) == ["TCGA-FX-0001", "TCGA-FX-0002"]
    # by hand: 0 -> -2, 1 -> -1, 2 -> 0, 3-4 -> 1, >= 5 -> 2
    np.testing.assert_array_equal(calls.loc[genes].to_numpy(), [[0, -1], [-2, 0], [2, 1], [1, 2]])
    assert copy_number_calls(pd.Series([np.nan, 4.0])).iloc[1] == 1
    bad = files / rows[2]["File ID"] / rows[2]["File Name"]
    bad.write_text(bad.read_text().replace("\t5\t", "\tamp\t"))
    calls, errors = read_copy_number_download(sheet, files)
    assert list(calls.columns) == ["TCGA-FX-0001"]
    assert len(errors) == 1 and bad.name in errors[0] and "copy_number" in errors[0] and "'amp'" in errors[0]


def test_clinical_portal2_dotted_columns(tmp_path):
    """The newer clinical.tsv: dotted entity columns, '-- for missing, numbers like 337.0, repeated cases."""
    header = ["project.project_id", "cases.case_id", "cases.submitter_id", "demographic.age_at_index",
              "demographic.days_to_death", "demographic.vital_status", "diagnoses.days_to_last_follow_up",
              "diagnoses.primary_diagnosis", "treatments.treatment_type"]
    rows = [["TCGA-FX", "u1", "TCGA-FX-0001", "61", "337.0", "Dead", "'--", "Adenocarcinoma, NOS", "Radiation Therapy, NOS"],
            ["TCGA-FX", "u1", "TCGA-FX-0001", "61", "337.0", "Dead", "'--", "Adenocarcinoma, NOS", "Pharmaceutical Therapy, NOS"],
            ["TCGA-FX", "u2", "TCGA-FX-0002", "'--", "'--", "Alive", "1021.0", "Squamous cell carcinoma, NOS", "'--"]]
    path = tmp_path / "clinical.tsv"
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    clin = read_clinical(path)
    assert list(clin.index) == ["TCGA-FX-0001", "TCGA-FX-0002"]
    assert clin.loc["TCGA-FX-0001", ["os_time_days", "os_event"]].tolist() == [337.0, 1]
    assert clin.loc["TCGA-FX-0002", ["os_time_days", "os_event"]].tolist() == [1021.0, 0]
    assert clin.loc["TCGA-FX-0002", "primary_diagnosis"] == "Squamous cell carcinoma, NOS"
    assert np.isnan(clin.loc["TCGA-FX-0002", "age_at_index"])
