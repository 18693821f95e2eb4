"""`fusionrx scan`: real files recognised by content; broken ones named; the catalog it writes runs."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest

from flows.catalog.schema import load_catalog
from flows.cli import main
from flows.catalog.scan import scan
from flows.catalog.write import write_scan_catalog
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def real_scan():
    return scan(realdata_dir())


def test_real_files_every_patient_series_slide_and_spatial_sample(real_scan):
    rd = realdata_dir()
    pats = real_scan["patients"]
    for pid in ("STS_001", "STS_002"):
        n_slices = len(list((rd / "dicom" / "sts_cropped" / pid / "CT" / "image").iterdir()))
        ct, = pats[pid]["ct"]
        assert ct["n_files"] == n_slices and ct["path"].endswith(f"{pid}/CT/image")
        assert ct["series_uid"] == pydicom.dcmread(next((Path(ct["path"])).iterdir())).SeriesInstanceUID
        cropped = [p for p in pats[pid]["pet"] if "sts_cropped" in p["path"]]
        assert len(cropped) == 1 and cropped[0]["units"] == "GML" and cropped[0]["n_files"] == n_slices
        # CT and PET of one study share the frame of reference (how the pipeline pairs them)
        assert cropped[0]["frame_of_reference_uid"] == ct["frame_of_reference_uid"]
        assert {s["modality"] for s in pats[pid]["seg"]} == {"RTSTRUCT"}
    raw = [p for p in pats["STS_001"]["pet"] if "sts_raw_pet" in p["path"]]
    assert len(raw) == 1 and raw[0]["n_files"] == 267 and raw[0]["units"] == "BQML"
    # the shared files carry one RTSTRUCT twice (same series and SOP UID in two folders): one item, the copy named
    segs = pats["STS_001"]["seg"]
    assert len(segs) == 2
    assert [d for s in segs for d in s.get("duplicates", [])] == [str(rd / "dicom" / "sts_raw_pet" / "STS_001" /
                                                                      "mask" / "1-1.dcm")]
    wsi, = pats["CMU-1-Small-Region"]["wsi"]
    assert wsi["vendor"] == "aperio" and wsi["dimensions"] == [2220, 2967] and wsi["mpp"] == pytest.approx(0.499, abs=1e-3)
    sp, = pats["visium_v1_subsample"]["spatial"]
    assert sp["format"] == "spaceranger" and sp["positions_layout"].startswith("v1")
    feats = {Path(i["path"]).name: i for i in real_scan["cohort"]["features"]}
    assert set(feats) == {"tcga_blca_sig.csv.zip", "tcga_ucec_mutsig.csv.zip"}
    assert feats["tcga_blca_sig.csv.zip"]["id_column"] == "case_id"
    assert real_scan["problems"] == []
    assert str(rd / "dti" / "davis" / "Y") in real_scan["unrecognised"]  # a pickle: named, not guessed


def test_broken_copies_are_problems_never_crashes(tmp_path, capsys):
    rd = realdata_dir()
    src = rd / "dicom" / "sts_cropped" / "STS_002" / "CT" / "image"
    series = tmp_path / "TCIA" / "STS_002" / "01-01-2000-NA-CT" / "2.000000-CT-12345"
    series.mkdir(parents=True)
    files = sorted(src.iterdir())[:6]
    for k, f in enumerate(files):  # TCIA-style non-telling names, no extension on one of them
        shutil.copy(f, series / (f"1-{k + 1:03d}.dcm" if k else "IM00001"))
    truncated = series / "1-003.dcm"
    truncated.write_bytes(truncated.read_bytes()[:140])
    (tmp_path / "slide.svs").write_bytes(b"not a slide" * 50)
    good = "#version gdc-1.0.0\nHugo_Symbol\tTumor_Sample_Barcode\nTP53\tTCGA-AA-0001-01A-11D-A000-08\n"
    (tmp_path / "broken.maf.gz").write_bytes(gzip.compress(good.encode())[:25])
    result = scan(tmp_path)
    ct, = result["patients"]["STS_002"]["ct"]
    assert ct["n_files"] == 5 and ct["path"] == str(series)
    problems = {Path(p["path"]).name: p["error"] for p in result["problems"]}
    assert set(problems) == {"1-003.dcm", "slide.svs", "broken.maf.gz"}
    assert "not recognised" in problems["slide.svs"]
    assert "compressed" in problems["broken.maf.gz"]
    assert main(["scan", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == result["problems"]
    # the written catalog keeps the problems, and a run over it reports them among its skipped inputs
    from flows.catalog.schema import load_catalog
    from flows.catalog.write import write_scan_catalog

    path, _ = write_scan_catalog(result, tmp_path / "out" / "catalog.yaml")
    catalog = load_catalog(path)
    assert {(Path(f).name, e) for f, e in catalog.scan_problems} == set(problems.items())
    assert all(Path(f).is_absolute() and Path(f).exists() for f, _ in catalog.scan_problems)


def _gdc_download(root: Path) -> dict:
    """A small gdc-client download (portal 2.0 sheet) with counts, per-aliquot MAFs, gene-level CN."""
    from flows.synthetic.gdc_writer import (new_file_uuid, write_clinical, write_gene_level_copy_number,
                                            write_maf, write_sample_sheet, write_star_counts)

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(30)]
    gene_ids = [f"ENSG{i:011d}.1" for i in range(30)]
    dl, rows, patients = root / "download", [], [f"TCGA-AB-{i:04d}" for i in range(1, 5)]

    def row(fid, name, cat, dtype, pid, samples):
        return {"File ID": fid, "File Name": name, "Data Category": cat, "Data Type": dtype, "Project ID": "TCGA-AB",
                "Case ID": pid, "Sample ID": samples, "Tissue Type": "Tumor", "Tumor Descriptor": "Primary",
                "Specimen Type": "Solid Tissue", "Preservation Method": "FFPE"}

    for k, pid in enumerate(patients):
        fid = new_file_uuid(rng)
        name = f"{fid}.rna_seq.augmented_star_gene_counts.tsv"
        write_star_counts(dl / fid / name, gene_ids, genes, ["protein_coding"] * 30, rng.integers(5, 500, 30))
        rows.append(row(fid, name, "Transcriptome Profiling", "Gene Expression Quantification", pid, f"{pid}-01A"))
        fid = new_file_uuid(rng)
        name = f"TCGA-AB.{fid}.wxs.aliquot_ensemble_masked.maf.gz"
        recs = pd.DataFrame({"Hugo_Symbol": [genes[k]], "Chromosome": ["chr1"], "Start_Position": [100 + k],
                             "Variant_Classification": ["Missense_Mutation"], "Variant_Type": ["SNP"],
                             "Reference_Allele": ["A"], "Tumor_Seq_Allele2": ["T"],
                             "Tumor_Sample_Barcode": [f"{pid}-01A-11D-A000-08"], "HGVSp_Short": ["p.X1Y"]})
        write_maf(dl / fid / name, recs, version="gdc-2.0.0-aliquot-merged-masked")
        rows.append(row(fid, name, "Simple Nucleotide Variation", "Masked Somatic Mutation", pid,
                        f"{pid}-10A, {pid}-01A"))
        fid = new_file_uuid(rng)
        name = f"TCGA-AB.{fid}.ascat3.gene_level_copy_number.v36.tsv"
        write_gene_level_copy_number(dl / fid / name, gene_ids, genes, np.full(30, 2 + k))
        rows.append(row(fid, name, "Copy Number Variation", "Gene Level Copy Number", pid, f"{pid}-01A, {pid}-10A"))
    write_sample_sheet(root / "gdc_sample_sheet.2024-05-01.tsv", rows)
    write_clinical(root / "clinical.cart.2024-05-01" / "clinical.tsv", pd.DataFrame({
        "case_submitter_id": patients, "project_id": "TCGA-AB", "vital_status": ["Dead", "Alive", "Dead", "Alive"],
        "days_to_death": [100, None, 300, None], "days_to_last_follow_up": [None, 200, None, 400],
        "primary_diagnosis": ["A", "B", "A", "B"]}))
    pd.DataFrame({"compound_id": ["c1", "c2"], "smiles": ["CCO", "c1ccccc1"], "target_gene": ["G1", "G2"]}
                 ).to_csv(root / "compounds.csv", index=False)
    pd.DataFrame({"case_id": [f"{p}-01Z-00-DX1" for p in patients], "uni_0": [0.1, 0.2, 0.3, 0.4],
                  "uni_1": [1.0, 2.0, 3.0, 4.0]}).to_parquet(root / "slide_embeddings.parquet")
    for pid in patients[:2]:  # CLAM-style per-slide tile features
        with h5py.File(root / f"{pid}-01Z-00-DX1.h5", "w") as f:
            f["features"] = rng.normal(size=(7, 16)).astype(np.float32)
            f["coords"] = rng.integers(0, 5000, size=(7, 2))
    return {"patients": patients, "dl": dl}


def test_gdc_download_scanned_per_patient_and_catalog_reads(tmp_path):
    from flows.stages.bulk_omics import read_bulk_omics
    from flows.stages.features import precomputed_features

    made = _gdc_download(tmp_path)
    result = scan(tmp_path)
    assert result["problems"] == []
    for k, pid in enumerate(made["patients"]):
        mods = result["patients"][pid]
        assert {"expression", "mutations", "copy_number"} <= set(mods)
        assert mods["mutations"][0]["maf_version"] == "gdc-2.0.0-aliquot-merged-masked"
        assert mods["expression"][0]["sample_id"] == f"{pid}-01A"
    assert sorted(result["patients"][made["patients"][0]]) == ["copy_number", "expression", "mutations",
                                                                  "tile_features"]
    assert [Path(i["path"]).name for i in result["cohort"]["compounds"]] == ["compounds.csv"]
    assert result["cohort"]["sample_sheet"][0]["generation"] == "portal 2.0"
    assert result["cohort"]["clinical"][0]["format"] == "gdc_clinical"
    path, notes = write_scan_catalog(result, tmp_path / "cat" / "catalog.yaml")
    assert notes == []
    cat = load_catalog(path)
    fmts = {s.name: s.format for s in cat.sources.values()}
    assert fmts == {"expression": "gdc_star_counts", "mutations": "gdc_maf_download",
                    "copy_number": "gdc_gene_level_copy_number", "clinical": "gdc_clinical",
                    "compounds": "compound_table", "tile_features": "tile_features_h5",
                    "features_slide_embeddings": "feature_table"}
    bulk = read_bulk_omics(cat)
    assert bulk.skipped == [] and sorted(bulk.maf["patient_id"]) == made["patients"]
    # copies 2, 3, 4, 5 -> calls 0, 1, 1, 2 for every gene
    assert bulk.copy_number.loc["G0"].tolist() == [0, 1, 1, 2]
    frames, bags, skipped = precomputed_features(cat)
    assert skipped == [] and sorted(bags) == made["patients"][:2] and bags[made["patients"][0]].shape == (7, 16)
    emb = frames["features_slide_embeddings"]
    assert list(emb.index) == made["patients"] and emb["uni_1"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_bad_maf_and_copy_number_drop_only_their_files(tmp_path):
    from flows.stages.bulk_omics import read_bulk_omics

    made = _gdc_download(tmp_path)
    path, _ = write_scan_catalog(scan(tmp_path), tmp_path / "catalog.yaml")
    bad_maf = next(made["dl"].glob("*/*.maf.gz"))
    bad_maf.write_bytes(b"\x1f\x8b broken")
    bad_cn = next(made["dl"].glob("*/*copy_number*.tsv"))
    bad_cn.write_text("gene_id\tgene_name\n")
    bulk = read_bulk_omics(load_catalog(path))
    named = {Path(s.error.split(": ")[0].removeprefix("skipped ")).name: s for s in bulk.skipped}
    assert set(named) == {bad_maf.name, bad_cn.name}
    assert named[bad_cn.name].source == "copy_number" and "copy_number" in named[bad_cn.name].error
    assert len(set(bulk.maf["patient_id"])) == 3 and bulk.copy_number.shape[1] == 3


def test_real_feature_table_one_row_per_patient_without_outcomes():
    from flows.stages.features import read_feature_table

    path = realdata_dir() / "tcga" / "mcat" / "tcga_blca_sig.csv.zip"
    with zipfile.ZipFile(path) as z:  # independent read: the member is named '../...'; never extracted
        member = z.infolist()[0]
        assert member.filename.startswith("../")
        rows = list(csv.DictReader(io.TextIOWrapper(z.open(member))))
    table = read_feature_table(path)
    cases = sorted({r["case_id"] for r in rows})
    assert list(table.index) == cases and len(cases) == 373 and len(rows) == 437  # several slides per case
    assert not {"survival_months", "censorship", "Unnamed: 0", "slide_id"} & set(table.columns)
    case = cases[0]
    col = next(c for c in table.columns if c.endswith("_rnaseq"))
    by_hand = np.mean([float(r[col]) for r in rows if r["case_id"] == case])
    assert table.loc[case, col] == pytest.approx(by_hand, rel=1e-5)


def test_bad_clinical_is_a_clear_fatal_error(tmp_path):
    """Clinical holds the labels every experiment needs: unreadable, the run stops naming the file."""
    from flows.stages.bulk_omics import read_bulk_omics
    from fusion.errors import OmicsFormatError

    _gdc_download(tmp_path)
    path, _ = write_scan_catalog(scan(tmp_path), tmp_path / "catalog.yaml")
    clinical = tmp_path / "clinical.cart.2024-05-01" / "clinical.tsv"
    clinical.write_text(clinical.read_text().replace("vital_status", "status"))
    with pytest.raises(OmicsFormatError, match=r"clinical\.tsv.*vital_status"):
        read_bulk_omics(load_catalog(path))


def test_scan_and_the_slide_reader_agree_on_tiffs(tmp_path):
    """A QPTIFF-style TIFF that only tifffile reads is a slide for `scan` as for `fusionrx slide`; a TIFF with
    the 72-dpi default resolution is a named problem, never catalogued for tiling."""
    import numpy as np
    import tifffile

    from imaging.slide import open_slide, slide_mpp

    image = np.full((512, 640, 3), 180, np.uint8)
    qptiff = tmp_path / "P01-DX1.qptiff"
    tifffile.imwrite(qptiff, image, photometric="rgb", tile=(256, 256), resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")  # 0.5 um/px
    photo = tmp_path / "P02-photo.tif"
    tifffile.imwrite(photo, image, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    with open_slide(qptiff) as slide:
        assert slide_mpp(slide) == pytest.approx(0.5)
    result = scan(tmp_path)
    wsi = result["patients"]["P01"]["wsi"]
    assert len(wsi) == 1 and wsi[0]["mpp"] == pytest.approx(0.5) and wsi[0]["dimensions"] == [640, 512]
    problems = {Path(p["path"]).name: p["error"] for p in result["problems"]}
    assert "P02-photo" not in result["patients"] and "72" in problems[photo.name]


def test_a_run_reports_the_files_its_catalog_scan_found_damaged(small_cohort, tmp_path):
    """Files `scan` named as problems never enter the catalog's sources; the run still names them among its
    skipped inputs (the catalog's scan_problems), so a run summary lists every damaged file."""
    import yaml

    from flows.console import RunConsole
    from flows.pipeline import open_run

    raw = yaml.safe_load((small_cohort / "data_catalog.yaml").read_text())
    raw["root"] = str(small_cohort)
    bad = tmp_path / "photo.svs"
    bad.write_bytes(b"<html>404</html>")
    raw["scan_problems"] = [{"path": str(bad), "error": "not recognised as a slide by OpenSlide"}]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(raw))
    ctx = open_run(str(catalog), str(tmp_path / "store"), None, RunConsole("quiet"))
    assert any(s.source == "scan" and s.file == str(bad) and "OpenSlide" in s.error for s in ctx.skipped)
