import zipfile

import numpy as np
import pytest

from fusion.errors import CatalogError, OmicsFormatError
from omics.clinical import (
    DAYS_PER_MONTH,
    OUTCOME_COLUMNS,
    ClinicalLabels,
    is_outcome_column,
    looks_like_clinical,
    read_clinical_table,
)
from tests.realdata import realdata_dir


def _write(path, rows, sep=","):
    path.write_text("\n".join(sep.join(str(v) for v in r) for r in rows) + "\n")
    return path


def _assert_no_outcome_covariates(table):
    assert not any(is_outcome_column(c) for c in table.covariates.columns)
    fed = [table.source_columns[c][0] for c in table.covariates.columns]
    assert not any(is_outcome_column(c) for c in fed)
    assert set(fed).isdisjoint(table.source_columns.get("time_months", ()) + table.source_columns.get("event", ()))


# ------------------------------------------------------------------------------------ spellings
def test_os_months_and_os_event(tmp_path):
    path = _write(tmp_path / "site_a.csv", [
        ["patient_id", "age", "sex", "histology", "os_months", "os_event", "Stage"],
        [" P1 ", "61", "Female", "Adenocarcinoma", "12.5", "1", "Stage IIA"],
        ["P2", "NA", "M", "Squamous", "30", "0", "Stage I"],
        ["P3", "70", "male", "", "", "", ""],
    ])
    table = read_clinical_table(path)
    assert list(table.patients) == ["P1", "P2", "P3"]
    labels = table.labels
    assert list(labels.columns) == ["diagnosis", "time_months", "event"]
    assert labels.loc["P1"].tolist() == ["Adenocarcinoma", 12.5, 1.0]
    assert labels.loc["P2", "time_months"] == 30.0 and labels.loc["P2", "event"] == 0.0
    assert np.isnan(labels.loc["P3", "time_months"]) and np.isnan(labels.loc["P3", "event"])
    assert labels["diagnosis"].isna().tolist() == [False, False, True]
    assert list(table.covariates.columns) == ["age", "sex", "stage"]
    assert table.covariates["sex"].tolist() == ["female", "male", "male"]
    assert table.covariates["stage"].tolist()[:2] == ["stage iia", "stage i"]
    assert table.covariates["age"].tolist()[0] == 61.0 and np.isnan(table.covariates.loc["P2", "age"])
    assert table.source_columns["time_months"] == ("os_months",) and table.source_columns["event"] == ("os_event",)
    assert table.source_columns["diagnosis"] == ("histology",) and table.source_columns["sex"] == ("sex",)
    _assert_no_outcome_covariates(table)


def test_tcga_pancan_os_time_in_days(tmp_path):
    header = ["bcr_patient_barcode", "type", "age_at_initial_pathologic_diagnosis", "gender", "histological_type",
              "vital_status", "OS", "OS.time", "PFI", "PFI.time"]
    path = _write(tmp_path / "cdr.tsv", [
        header,
        ["TCGA-AA-0001", "BLCA", "65", "MALE", "Papillary", "Dead", "1", "365.25", "1", "100"],
        ["TCGA-AA-0002", "BLCA", "58", "FEMALE", "Non-Papillary", "Alive", "0", "913.125", "0", "913.125"],
        ["TCGA-AA-0003", "BLCA", "[Not Available]", "FEMALE", "[Not Available]", "Alive", "0", "0", "0", "0"],
    ], sep="\t")
    table = read_clinical_table(path)
    assert table.source_columns["time_months"] == ("OS.time",) and table.source_columns["event"] == ("OS",)
    np.testing.assert_allclose(table.labels["time_months"], [12.0, 30.0, 0.0])
    assert table.labels["event"].tolist() == [1.0, 0.0, 0.0]
    assert table.labels.loc["TCGA-AA-0002", "diagnosis"] == "Non-Papillary"
    assert np.isnan(table.covariates.loc["TCGA-AA-0003", "age"])
    assert list(table.covariates.columns) == ["age", "sex"]
    _assert_no_outcome_covariates(table)


def test_gdc_vital_status_death_or_follow_up(tmp_path):
    """GDC flat clinical.tsv: '-- for missing, a case repeated per treatment, death if dead else follow-up."""
    header = ["case_id", "case_submitter_id", "project_id", "age_at_index", "gender", "vital_status",
              "days_to_death", "days_to_last_follow_up", "primary_diagnosis", "ajcc_pathologic_stage",
              "treatment_type"]
    path = _write(tmp_path / "clinical.tsv", [
        header,
        ["u1", "TCGA-FX-0001", "TCGA-FX", "61", "female", "Dead", "609.0", "'--", "Adenocarcinoma, NOS", "Stage II",
         "Radiation Therapy, NOS"],
        ["u1", "TCGA-FX-0001", "TCGA-FX", "61", "female", "Dead", "609.0", "'--", "Adenocarcinoma, NOS", "Stage II",
         "Pharmaceutical Therapy, NOS"],
        ["u2", "TCGA-FX-0002", "TCGA-FX", "55", "male", "Alive", "'--", "1217.5", "Adenocarcinoma, NOS", "'--", "'--"],
        ["u3", "TCGA-FX-0003", "TCGA-FX", "70", "male", "Dead", "'--", "304.375", "Squamous cell carcinoma, NOS",
         "Stage I", "'--"],
        ["u4", "TCGA-FX-0004", "TCGA-FX", "40", "male", "Not Reported", "'--", "'--", "'--", "'--", "'--"],
    ], sep="\t")
    table = read_clinical_table(path)
    assert list(table.patients) == ["TCGA-FX-0001", "TCGA-FX-0002", "TCGA-FX-0003", "TCGA-FX-0004"]
    assert table.source_columns["time_months"] == ("days_to_death", "days_to_last_follow_up")
    assert table.source_columns["event"] == ("vital_status",)
    t = table.labels["time_months"]
    assert t["TCGA-FX-0001"] == pytest.approx(609.0 / DAYS_PER_MONTH)
    assert t["TCGA-FX-0002"] == pytest.approx(40.0) and t["TCGA-FX-0003"] == pytest.approx(10.0)
    assert np.isnan(t["TCGA-FX-0004"])
    assert table.labels["event"].tolist()[:3] == [1.0, 0.0, 1.0] and np.isnan(table.labels["event"].iloc[3])
    assert table.labels.loc["TCGA-FX-0003", "diagnosis"] == "Squamous cell carcinoma, NOS"
    assert list(table.covariates.columns) == ["age", "sex", "stage"]
    _assert_no_outcome_covariates(table)


def test_gdc_dotted_header_keeps_the_primary_diagnosis(tmp_path):
    header = ["project.project_id", "cases.case_id", "cases.submitter_id", "demographic.age_at_index",
              "demographic.days_to_death", "demographic.vital_status", "diagnoses.days_to_last_follow_up",
              "diagnoses.diagnosis_is_primary_disease", "diagnoses.primary_diagnosis", "treatments.treatment_type"]
    path = _write(tmp_path / "clinical.tsv", [
        header,
        ["TCGA-FX", "u1", "TCGA-FX-0001", "61", "337.0", "Dead", "'--", "true", "Adenocarcinoma, NOS", "'--"],
        ["TCGA-FX", "u1", "TCGA-FX-0001", "61", "337.0", "Dead", "'--", "false", "Basal cell carcinoma, NOS", "'--"],
        ["TCGA-FX", "u2", "TCGA-FX-0002", "'--", "'--", "Alive", "1021.0", "true", "Squamous cell carcinoma, NOS",
         "'--"],
        ["TCGA-FX", "u2", "TCGA-FX-0002", "'--", "'--", "Alive", "1100.0", "true", "Squamous cell carcinoma, NOS",
         "'--"],
    ], sep="\t")
    table = read_clinical_table(path)
    assert list(table.patients) == ["TCGA-FX-0001", "TCGA-FX-0002"]  # the barcode, not the UUID
    assert table.labels.loc["TCGA-FX-0001", "diagnosis"] == "Adenocarcinoma, NOS"
    assert table.labels.loc["TCGA-FX-0001", "time_months"] == pytest.approx(337.0 / DAYS_PER_MONTH)
    # the latest follow-up of a repeated case
    assert table.labels.loc["TCGA-FX-0002", "time_months"] == pytest.approx(1100.0 / DAYS_PER_MONTH)
    assert table.labels["event"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("column,values,expected", [
    ("censorship", ["1", "0", "1.0"], [0.0, 1.0, 0.0]),  # MCAT / PORPOISE: 1 = censored
    ("censored", ["TRUE", "false", "True"], [0.0, 1.0, 0.0]),
    ("Vital Status", ["Alive", "Dead", "deceased"], [0.0, 1.0, 1.0]),
])
def test_censoring_columns_are_inverted(tmp_path, column, values, expected):
    rows = [["case_id", "age", "survival_months", column]] + [
        [f"TCGA-AB-000{i}", 50 + i, 10 * i, v] for i, v in enumerate(values)]
    table = read_clinical_table(_write(tmp_path / "mcat.csv", rows))
    assert table.labels["event"].tolist() == expected
    assert table.labels["time_months"].tolist() == [0.0, 10.0, 20.0]
    assert table.source_columns["event"] == (column,)
    assert list(table.covariates.columns) == ["age"]


def test_cbioportal_comment_lines_and_status_codes(tmp_path):
    path = tmp_path / "data_clinical_patient.txt"
    path.write_text("#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\tSex\n"
                    "#Identifier\tmonths\tstatus\tsex\n#STRING\tNUMBER\tSTRING\tSTRING\n#1\t1\t1\t1\n"
                    "PATIENT_ID\tOS_MONTHS\tOS_STATUS\tSEX\n"
                    "P-01\t7.5\t1:DECEASED\tFemale\nP-02\t40.25\t0:LIVING\tMale\n")
    table = read_clinical_table(path)
    assert table.labels["time_months"].tolist() == [7.5, 40.25]
    assert table.labels["event"].tolist() == [1.0, 0.0]
    assert table.covariates["sex"].tolist() == ["female", "male"]


def test_labels_mapping_to_custom_names(tmp_path):
    path = _write(tmp_path / "site_b.csv", [
        ["Subject ID", "tumour_class", "fu_time", "still_alive", "age", "os_months"],
        ["S1", "GBM", "1.5", "yes", "44", "999"],
        ["S2", "LGG", "0.25", "no", "38", "999"],
    ])
    labels = ClinicalLabels.from_config({"diagnosis": "tumour_class", "time": "fu_time", "event": "still_alive",
                                         "event_is_censoring": True, "time_unit": "years"})
    table = read_clinical_table(path, labels, id_map={"S2": "PAT-2"})
    assert list(table.patients) == ["S1", "PAT-2"]
    assert table.labels["time_months"].tolist() == [18.0, 3.0]
    assert table.labels["event"].tolist() == [0.0, 1.0]
    assert table.labels["diagnosis"].tolist() == ["GBM", "LGG"]
    assert table.source_columns["time_months"] == ("fu_time",)
    assert list(table.covariates.columns) == ["age"]  # os_months is an outcome even when not the label
    _assert_no_outcome_covariates(table)
    # a time column whose unit neither the name nor the config gives
    with pytest.raises(CatalogError, match=r"site_b\.csv.*'fu_time'.*time_unit"):
        read_clinical_table(path, ClinicalLabels(time="fu_time"))


def test_endpoint_pairing_and_id_column(tmp_path):
    path = _write(tmp_path / "endpoints.csv", [["record", "patient_id", "OS.time", "OS", "PFI.time", "PFI"],
                                               ["R1", "X", "365.25", "0", "30.4375", "1"]])
    table = read_clinical_table(path)  # overall survival first
    assert list(table.patients) == ["X"] and table.labels.loc["X", ["time_months", "event"]].tolist() == [12.0, 0.0]
    table = read_clinical_table(path, ClinicalLabels(time="PFI.time"), id_column="record")
    assert list(table.patients) == ["R1"] and table.labels.loc["R1", ["time_months", "event"]].tolist() == [1.0, 1.0]
    assert table.source_columns["event"] == ("PFI",)  # the named time's own endpoint
    with pytest.raises(CatalogError, match=r"endpoints\.csv.*id_column.*'rec'"):
        read_clinical_table(path, id_column="rec")


def test_age_in_days_and_negative_time(tmp_path):
    path = _write(tmp_path / "c.tsv", [
        ["submitter_id", "age_at_diagnosis", "os_days", "os_event"],
        ["A", "21915", "60.875", "1"],
        ["B", "18262.5", "-3", "0"],
    ], sep="\t")
    table = read_clinical_table(path)
    np.testing.assert_allclose(table.covariates["age"], [60.0, 50.0])
    assert table.labels.loc["A", "time_months"] == pytest.approx(2.0)
    assert np.isnan(table.labels.loc["B", "time_months"])
    assert any("negative" in w and "B" in w for w in table.warnings)


# ----------------------------------------------------------------------------------------- errors
def test_errors_name_file_column_and_value(tmp_path):
    header = ["patient_id", "age", "os_months", "os_event"]
    bad_time = _write(tmp_path / "bad_time.csv", [header, ["P1", "60", "12 months", "1"]])
    with pytest.raises(OmicsFormatError, match=r"bad_time\.csv.*'os_months'.*'12 months'"):
        read_clinical_table(bad_time)
    bad_event = _write(tmp_path / "bad_event.csv", [header, ["P1", "60", "12", "1"], ["P2", "60", "3", "2"]])
    with pytest.raises(OmicsFormatError, match=r"bad_event\.csv.*'os_event'.*0/1.*dead/alive.*found '2'"):
        read_clinical_table(bad_event)
    absent = _write(tmp_path / "absent.csv", [header, ["P1", "60", "12", "1"]])
    with pytest.raises(CatalogError, match=r"absent\.csv.*labels\.event.*'death_flag'.*absent"):
        read_clinical_table(absent, ClinicalLabels(event="death_flag"))
    no_id = _write(tmp_path / "no_id.csv", [["name", "os_months"], ["x", "1"]])
    with pytest.raises(OmicsFormatError, match=r"no_id\.csv.*patient id column"):
        read_clinical_table(no_id)
    empty_id = _write(tmp_path / "empty_id.csv", [header, ["", "60", "12", "1"]])
    with pytest.raises(OmicsFormatError, match=r"empty_id\.csv.*'patient_id'.*empty"):
        read_clinical_table(empty_id)


def test_duplicate_patients_with_different_values(tmp_path):
    path = _write(tmp_path / "dup.csv", [["patient_id", "age", "os_months", "os_event"],
                                         ["P1", "60", "12", "1"], ["P2", "50", "5", "0"], ["P1", "60", "14", "1"]])
    with pytest.raises(OmicsFormatError, match=r"dup\.csv.*\['P1'\].*'os_months'"):
        read_clinical_table(path)
    # two file ids mapped onto one patient are duplicates too
    ok = _write(tmp_path / "ok.csv", [["patient_id", "os_months", "os_event"], ["A", "1", "1"], ["B", "2", "1"]])
    with pytest.raises(OmicsFormatError, match=r"ok\.csv.*\['P9'\]"):
        read_clinical_table(ok, id_map={"A": "P9", "B": "P9"})


def test_labels_from_config():
    assert ClinicalLabels.from_config(None) == ClinicalLabels()
    assert ClinicalLabels.from_config({"time": "T", "time_unit": "Day"}).time_unit == "days"
    with pytest.raises(CatalogError, match=r"run\.yaml: labels.*'status'.*expected"):
        ClinicalLabels.from_config({"status": "x"}, where="run.yaml: labels")
    with pytest.raises(CatalogError, match=r"time_unit.*'weeks'"):
        ClinicalLabels.from_config({"time_unit": "weeks"})
    with pytest.raises(CatalogError, match=r"event_is_censoring.*'yes'"):
        ClinicalLabels.from_config({"event_is_censoring": "yes"})
    with pytest.raises(CatalogError, match=r"'time'.*must name a column"):
        ClinicalLabels.from_config({"time": 3})


# ------------------------------------------------------------------------------ vocabulary, sniffing
@pytest.mark.parametrize("name", ["os_months", "OS.time", "OS", "os-event", "Vital Status", "demographic.vital_status",
                                  "days_to_death", "diagnoses.days_to_last_follow_up", "censorship", "Censored",
                                  "PFI.time", "dfs_status", "survival_months", "event", "label", "oncotree_code",
                                  "primary_diagnosis", "OS_MONTHS", "pfs_days", "death_days_to", "os_time_days"])
def test_outcome_columns(name):
    assert is_outcome_column(name)


@pytest.mark.parametrize("name", ["age", "age_at_index", "sex", "gender", "is_female", "ajcc_pathologic_stage",
                                  "TP53", "AAK1_rnaseq", "feat_0", "days_to_birth", "patient_id", "smoking"])
def test_not_outcome_columns(name):
    assert not is_outcome_column(name)


def test_every_vocabulary_outcome_is_an_outcome():
    assert all(is_outcome_column(c) for c in OUTCOME_COLUMNS)


GDC_FLAT = ["case_id", "case_submitter_id", "project_id", "age_at_index", "vital_status", "days_to_death",
            "days_to_last_follow_up", "treatment_type"]  # GDC-FORMATS.md, older flat clinical.tsv
GDC_DOTTED = ["project.project_id", "cases.case_id", "cases.submitter_id", "demographic.age_at_index",
              "demographic.days_to_death", "demographic.vital_status", "diagnoses.days_to_last_follow_up",
              "diagnoses.diagnosis_is_primary_disease", "treatments.treatment_type"]  # GDC-FORMATS.md, newer
# more GDC clinical.tsv field names: real exports are 150+ columns wide, most outside any vocabulary
GDC_MORE = [
    "age_is_obfuscated", "cause_of_death", "country_of_residence_at_enrollment", "days_to_birth", "ethnicity",
    "gender", "occupation_duration_years", "premature_at_birth", "race", "weeks_gestation_at_birth", "year_of_birth",
    "year_of_death", "age_at_diagnosis", "ajcc_clinical_m", "ajcc_clinical_n", "ajcc_clinical_stage",
    "ajcc_clinical_t", "ajcc_pathologic_m", "ajcc_pathologic_n", "ajcc_pathologic_stage", "ajcc_pathologic_t",
    "ajcc_staging_system_edition", "anaplasia_present", "ann_arbor_b_symptoms", "ann_arbor_clinical_stage",
    "best_overall_response", "classification_of_tumor", "days_to_diagnosis", "days_to_last_known_disease_status",
    "days_to_recurrence", "figo_stage", "icd_10_code", "last_known_disease_status", "laterality",
    "metastasis_at_diagnosis", "method_of_diagnosis", "morphology", "primary_diagnosis", "prior_malignancy",
    "prior_treatment", "progression_or_recurrence", "residual_disease", "site_of_resection_or_biopsy",
    "synchronous_malignancy", "tissue_or_organ_of_origin", "tumor_grade", "year_of_diagnosis",
    "days_to_treatment_end", "days_to_treatment_start", "initial_disease_status", "number_of_cycles",
    "reason_treatment_ended", "regimen_or_line_of_therapy", "route_of_administration", "therapeutic_agents",
    "treatment_anatomic_site", "treatment_arm", "treatment_dose", "treatment_dose_units", "treatment_effect",
    "treatment_frequency", "treatment_intent_type", "treatment_or_therapy", "treatment_outcome",
]


@pytest.mark.parametrize("columns", [
    ["patient_id", "age", "sex", "histology", "os_months", "os_event"],
    ["PatientID", "Age", "Gender", "OS.time", "OS"],
    GDC_FLAT,
    GDC_DOTTED,
    GDC_FLAT + GDC_MORE + [f"{c}_{i}x" for i in range(1, 2) for c in GDC_MORE],  # ~140 wordy columns
])
def test_looks_like_clinical(columns):
    assert looks_like_clinical(columns)


FEATURES_607 = ["patient_id", "age", "sex", "os_months", "os_event"] + [f"feat_{i}" for i in range(602)]


@pytest.mark.parametrize("columns", [
    FEATURES_607,
    ["case_id", "age", "survival_months", "censorship"] + [f"GENE{i}_rnaseq" for i in range(603)],
    ["patient_id"] + [f"{g}" for g in ("TP53", "EGFR", "KRAS", "MYC", "PTEN") * 20] + ["age", "os_months"],
    ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second", "tpm_unstranded",
     "fpkm_unstranded", "fpkm_uq_unstranded"],  # STAR counts
    ["File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID", "Sample Type"],
    ["Hugo_Symbol", "Entrez_Gene_Id", "Center", "Chromosome", "Start_Position", "Tumor_Sample_Barcode", "case_id"],
    ["Gene Symbol", "Locus ID", "Cytoband", "TCGA-FX-0001-01A-11D-A000-01"],
    ["patient_id", "os_months"],  # only one clinical column
    ["age", "sex", "os_months", "os_event"],  # no id
])
def test_not_clinical(columns):
    assert not looks_like_clinical(columns)


def test_607_column_feature_table_with_outcomes_is_not_clinical():
    assert len(FEATURES_607) == 607 and looks_like_clinical(FEATURES_607[:5])
    assert not looks_like_clinical(FEATURES_607)


@pytest.mark.parametrize("parts", [("tcga", "mcat", "tcga_blca_sig.csv.zip"),
                                   ("tcga", "porpoise", "tcga_ucec_mutsig.csv.zip")])
def test_published_feature_tables_are_not_clinical(parts):
    """The MCAT / PORPOISE tables carry case_id, age, survival_months, censorship beside thousands of features."""
    with zipfile.ZipFile(realdata_dir(*parts)) as z, z.open(z.infolist()[0]) as f:
        header = f.readline().decode().strip().split(",")
    assert {"case_id", "age", "survival_months", "censorship"} <= set(header)
    assert not looks_like_clinical(header)
