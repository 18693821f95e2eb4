"""`scan` then `run` on a site's folder built from the shared real files (two STS patients with their
RTSTRUCTs, the Aperio slide and the Visium sample filed under them, a plain clinical sheet): the job a
site runs on its own data. The GTV phenotypes are checked against pydicom + skimage computed here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from flows.cli import main
from tests.flows.realsite import PATIENTS, build_site
from tests.independent_roi import independent_roi
from tests.realdata import realdata_dir

ROI = {"pet": ["GTV*_PET"], "ct": ["GTV*_CT"]}


@pytest.fixture(scope="module")
def site_run(tmp_path_factory, prefect_harness) -> dict:
    realdata = realdata_dir()
    tmp = tmp_path_factory.mktemp("site")
    site = build_site(realdata, tmp / "site")
    assert main(["scan", str(site), "--out", str(tmp / "catalog.yaml")]) == 0
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump({"roi": ROI, "roi_fallback": "none", "tile_encoder_epochs": 2,
                                      "encoder_tiles_per_slide": 16}))
    store = tmp / "store"
    code = main(["run", "--catalog", str(tmp / "catalog.yaml"), "--store", str(store), "--config", str(config),
                 "--quiet"])
    run = json.loads(next(p for p in (store / "runs").glob("*.json") if not p.name.endswith(".report.json")).read_text())
    return {"code": code, "store": store, "run": run, "catalog": yaml.safe_load((tmp / "catalog.yaml").read_text()),
            "realdata": realdata}


def test_scan_catalogues_the_site_and_its_clinical_sheet(site_run) -> None:
    sources = site_run["catalog"]["sources"]
    assert sources["clinical"]["format"] == "clinical_table"  # labels, never a feature table
    assert not any(s["modality"] == "features" for s in sources.values())
    assert list(sources["wsi"]["files"]) == [PATIENTS[0]]  # STS_001-DX1.svs is patient STS_001's slide
    assert [Path(f).name for f in sources["wsi"]["files"][PATIENTS[0]]] == ["STS_001-DX1.svs", "STS_001-TS1.svs"]
    assert sources["compounds"]["format"] == "compound_table"  # a SMILES-only library
    assert list(sources["spatial"]["files"]) == [PATIENTS[1]]


def test_run_exits_0_and_says_why_each_absent_stage_is_skipped(site_run, capsys) -> None:
    assert site_run["code"] == 0
    skipped = site_run["run"]["metrics"]["stages_skipped"]
    assert "targets: no expression source, ranking skipped" in skipped
    assert any(s.startswith("experiments:") and "min_patients is 20" in s for s in skipped)
    assert any(s.startswith("spatial-encoder: 1 spatial sample") for s in skipped)


@pytest.mark.parametrize("patient", PATIENTS)
def test_phenotypes_equal_an_independent_gtv_computation(site_run, patient: str, capsys) -> None:
    capsys.readouterr()
    assert main(["phenotypes", "--store", str(site_run["store"]), "--format", "json"]) == 0
    rows = {r["patient_id"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows[patient]
    assert (row["roi"], row["roi_source"]) == ("GTV_Mass_CT + GTV_Mass_PET", "rtstruct")
    src = site_run["realdata"] / "dicom" / "sts_cropped" / patient
    pet = independent_roi(src / "PET" / "image", src / "PET" / "mask" / "RS.dcm", "GTV_Mass_PET")
    ct = independent_roi(src / "CT" / "image", src / "CT" / "mask" / "RS.dcm", "GTV_Mass_CT")
    assert pydicom.dcmread(next((src / "PET" / "image").glob("*.dcm"))).Units == "GML"  # stored as SUVbw
    assert row["n_voxels_pet"] == pet["n"] and row["n_voxels_ct"] == ct["n"]
    assert row["volume_ml_pet"] == pytest.approx(pet["volume_ml"], rel=1e-6)
    assert row["suv_max"] == pytest.approx(pet["max"], rel=1e-6)
    assert row["suv_mean"] == pytest.approx(pet["mean"], rel=1e-6)
    assert row["volume_ml_ct"] == pytest.approx(ct["volume_ml"], rel=1e-6)
    assert row["ct_mean_hu"] == pytest.approx(ct["mean"], rel=1e-6)


def test_run_and_radiology_share_one_code_path(site_run, capsys) -> None:
    """`fusionrx radiology --roi` on the same patient and ROI gives the phenotypes `run` stored."""
    stored = pd.read_parquet(site_run["store"] / "imaging" / "phenotypes.parquet").loc[PATIENTS[0]]
    capsys.readouterr()
    folder = next(p for p in (site_run["store"].parent / "site" / "imaging").iterdir() if p.name == PATIENTS[0])
    assert main(["radiology", str(folder), "--roi", "GTV_Mass_PET", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["phenotypes"]["roi"] == "GTV_Mass_PET"
    for key in ("suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg", "volume_ml_pet"):
        assert report["phenotypes"][key] == pytest.approx(stored[key], rel=1e-9), key
    assert main(["radiology", str(folder), "--format", "json"]) == 0
    auto = json.loads(capsys.readouterr().out)
    assert "automatic lesion" in auto["note"] and "GTV_Mass_PET" in auto["note"]


def test_slide_and_spatial_sample_are_processed(site_run) -> None:
    store = site_run["store"]
    import duckdb
    import h5py

    with h5py.File(store / "wsi" / f"{PATIENTS[0]}.h5", "r") as f:
        assert f.attrs["slide_path"].endswith("STS_001-DX1.svs")  # the diagnostic slide, not the frozen section
        assert f.attrs["encoder"] == "builtin" and len(f.attrs["weights_sha256"]) == 64
        assert f["features"].shape[0] == f["coords"].shape[0] > 0
    with duckdb.connect(str(store / "results.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from compounds").fetchone()[0] == 3
    import anndata as ad

    sample = ad.read_h5ad(next((store / "spatial" / PATIENTS[1]).glob("*.h5ad")))
    assert sample.n_obs > 0 and "leiden" in sample.obs
    counts = {r["stage"]: r for r in site_run["run"].get("counts", [])} if "counts" in site_run["run"] else {}
    assert not counts or counts["pathology"]["failed"] == 0
