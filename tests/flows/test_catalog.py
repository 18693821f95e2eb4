"""The data catalog schema: valid catalogs load; each kind of bad entry is a clear CatalogError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.catalog.schema import load_catalog
from flows.cli import main
from fusion.errors import CatalogError


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "catalog.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture()
def layout(tmp_path: Path) -> dict:
    (tmp_path / "ct").mkdir()
    (tmp_path / "omics" / "expression").mkdir(parents=True)
    (tmp_path / "omics" / "sheet.tsv").write_text("File ID\n")
    (tmp_path / "omics" / "clinical.tsv").write_text("case_submitter_id\n")
    return {
        "version": 1, "cohort": "t", "root": ".",
        "sources": {
            "ct": {"modality": "ct", "format": "dicom_series", "path": "ct"},
            "rna": {"modality": "expression", "format": "gdc_star_counts", "path": "omics/expression",
                    "sample_sheet": "omics/sheet.tsv"},
            "clinical": {"modality": "clinical", "format": "gdc_clinical", "path": "omics/clinical.tsv"},
        },
    }


def test_valid_catalog_resolves_paths(tmp_path, layout):
    cat = load_catalog(_write(tmp_path, layout))
    assert cat.cohort == "t"
    assert cat.by_modality("ct").path == (tmp_path / "ct").resolve()
    assert cat.by_modality("expression").sample_sheet == (tmp_path / "omics" / "sheet.tsv").resolve()
    assert cat.by_modality("wsi") is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["sources"]["ct"].update(path="no/such/dir"), "source 'ct': path 'no/such/dir' does not exist"),
    (lambda d: d["sources"]["ct"].update(modality="mri"), "source 'ct': unknown modality 'mri'"),
    (lambda d: d["sources"]["ct"].pop("format"), "source 'ct': missing required field(s) ['format']"),
    (lambda d: d["sources"]["ct"].update(format="nifti"), "source 'ct': format 'nifti' is not readable"),
    (lambda d: d["sources"]["rna"].pop("sample_sheet"), "source 'rna': format 'gdc_star_counts' needs"),
    (lambda d: d["sources"]["ct"].update(colour="red"), "source 'ct': unknown field(s) ['colour']"),
    (lambda d: d["sources"]["clinical"].update(path="ct"), "source 'clinical': path 'ct' must be a file"),
    (lambda d: d["sources"].clear(), "'sources' must be a non-empty mapping"),
    (lambda d: d.pop("version"), "missing top-level field 'version'"),
])
def test_bad_entries_name_the_entry(tmp_path, layout, mutate, message):
    mutate(layout)
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, layout))
    assert message in str(err.value)
    assert "catalog.yaml" in str(err.value)


def test_any_subset_of_modalities_is_a_valid_cohort(tmp_path, layout):
    """A radiology group's catalog (CT only, no expression, no clinical) loads: stages skip what is absent."""
    for name in ("rna", "clinical"):
        layout["sources"].pop(name)
    cat = load_catalog(_write(tmp_path, layout))
    assert [s.modality for s in cat.sources.values()] == ["ct"]
    assert cat.by_modality("expression") is None and cat.by_modality("clinical") is None


def test_cli_reports_bad_catalog_clearly(tmp_path, layout, capsys):
    layout["sources"]["ct"]["path"] = "missing_ct"
    code = main(["run", "--catalog", str(_write(tmp_path, layout)), "--store", str(tmp_path / "store")])
    assert code == 2
    err = capsys.readouterr().err
    assert "fusionrx: error:" in err and "source 'ct'" in err and "missing_ct" in err


def test_repo_catalog_describes_the_demo_layout():
    raw = yaml.safe_load((Path(__file__).parents[2] / "data_catalog.yaml").read_text())
    assert raw["root"] == "demo_data"
    assert {s["modality"] for s in raw["sources"].values()} == {
        "ct", "pet", "wsi", "spatial", "expression", "mutations", "copy_number", "clinical", "compounds"}


def test_scan_style_entries_files_features_and_download_formats(tmp_path, layout):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "a.svs").write_bytes(b"x")
    (tmp_path / "feats").mkdir()
    (tmp_path / "feats" / "P1.h5").write_bytes(b"x")
    layout["sources"]["wsi"] = {"modality": "wsi", "format": "openslide", "path": "slides",
                                "files": {"P1": ["slides/a.svs"]}}
    cat = load_catalog(_write(tmp_path, layout))
    assert cat.by_modality("wsi").items() == {"P1": (tmp_path / "slides" / "a.svs").resolve()}
    layout["sources"]["wsi"]["files"]["P2"] = ["slides/missing.svs"]
    with pytest.raises(CatalogError, match=r"source 'wsi': file 'slides/missing.svs' of patient 'P2' does not exist"):
        load_catalog(_write(tmp_path, layout))
    layout["sources"]["wsi"]["files"].pop("P2")
    layout["sources"]["uni"] = {"modality": "features", "format": "tile_features_h5", "path": "feats"}
    with pytest.raises(CatalogError, match=r"\['uni'\] \(tile_features_h5\) and \['wsi'\] \(wsi\) both give"):
        load_catalog(_write(tmp_path, layout))
    layout["sources"].pop("wsi")
    layout["sources"]["maf"] = {"modality": "mutations", "format": "gdc_maf_download", "path": "omics/expression"}
    with pytest.raises(CatalogError, match=r"source 'maf': format 'gdc_maf_download' needs a 'sample_sheet'"):
        load_catalog(_write(tmp_path, layout))
