"""Patient reports (flows/patients): the report JSON of a patient of the end-to-end run, checked against the
store's own artifacts and the raw input files; a new patient's report through the frozen encoders equals the
cohort's prediction; `fusionrx report` errors and cohort reports.

The deployed diagnosis model is the run's (STORE/models/diagnosis) when the run saved one over CT, PET and the
slide; otherwise the test fits one (early fusion, 2 folds) into a view of the store whose other entries are
links to the run's: the shared store is never written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPORT_KEYS = {"patient_id", "diagnosis", "survival", "modality_contributions", "slide", "radiology", "spatial",
               "neighbours", "targets", "run"}
SECTION_KEYS = {
    "diagnosis": {"model", "version", "predicted", "probabilities"},
    "modality_contributions": {"base_value", "values", "target_class"},
    "slide": {"path", "mpp", "tiles"},
    "radiology": {"phenotypes", "roi", "ct_series", "pet_series"},
    "spatial": {"sample", "tumour_spots", "top_genes"},
    "run": {"run_id", "store", "code_version"},
}


def _store_data(store: Path, tmp: Path):
    """The store's experiment over ct, pet, expression and slide bags (diagnosis, 2 folds) and its options."""
    from flows.experiments.spec import load_spec
    from flows.experiments.store import load_store_experiment
    from flows.stages.deployed_model import spec_options

    spec = {"name": "report-test", "store": str(store), "id": "patient_id",
            "modalities": {"ct": "*", "pet": "*", "expression": "*", "wsi": {"bags": "wsi"}},
            "folds": 2, "repeats": 1, "seed": 0, "strategies": ["early"],
            "options": {"epochs": 8, "singles": False, "baseline": False, "robustness": False,
                        "bag_batch_size": None, "bag_train_instances": 32},
            "task": {"kind": "classification", "label": "primary_diagnosis"}}
    path = tmp / "report-test.yaml"
    path.write_text(yaml.safe_dump(spec))
    data, splits, _ = load_store_experiment(load_spec(path))
    return data, splits, spec_options(path, data)


def _fit_diagnosis_model(store: Path, folder: Path, tmp: Path) -> None:
    """A deployed diagnosis model over the store's ct, pet, expression and slide bags (early fusion, 2 folds,
    no singles or baseline: seconds), saved to ``folder``."""
    from fusion.deploy import fit_deployed, save_deployed
    from fusion.experiment import run_experiment

    data, splits, opts = _store_data(store, tmp)
    save_deployed(fit_deployed(data, run_experiment(data, splits, opts), opts), folder)


def _view(store: Path, view: Path, *, own: tuple[str, ...] = ()) -> Path:
    """A view of ``store``: every entry a link to the store's, except the paths in ``own`` (relative, e.g.
    'models' or 'imaging/radiology/P'), which are left to the caller (their parent folders are made)."""
    def fill(src: Path, dst: Path, rel: str) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            sub = f"{rel}{entry.name}"
            if sub in own:
                continue
            if any(o.startswith(sub + "/") for o in own):
                fill(entry, dst / entry.name, sub + "/")
            else:
                (dst / entry.name).symlink_to(entry.resolve())

    fill(store, view, "")
    return view


@pytest.fixture(scope="module")
def report_store(e2e_run, tmp_path_factory) -> Path:
    """The e2e run's store with a deployed diagnosis model taking CT, PET and the slide (the run's when it
    saved one, else one fitted into a view of the store whose other entries link to the run's)."""
    store = e2e_run["store"]
    meta = store / "models" / "diagnosis" / "model.json"
    if meta.is_file():
        meta = json.loads(meta.read_text())
        if {"ct", "pet", "wsi"} <= set(meta["modalities"]) and meta.get("kind", "neural") == "neural":
            return store
    view = _view(store, tmp_path_factory.mktemp("report_store"), own=("models",))
    _fit_diagnosis_model(store, view / "models" / "diagnosis", view)
    return view


@pytest.fixture(scope="module")
def patient(e2e_run, report_store) -> str:
    """A patient of the run with CT + PET, slide features, a spatial sample and expression (not the one whose CT
    file the fixture broke)."""
    from flows.patients.build import PatientStore

    ps = PatientStore(report_store)
    truth = e2e_run["truth"]
    return next(p for p in sorted(truth["imaging"]) if "pet" in truth["imaging"][p] and p in ps.slides
                and p in ps.spatial and p in ps.radiology and p != e2e_run["bad_ct_patient"]
                and set(ps.modalities_of(p)) >= {"ct", "pet", "expression", "wsi"})


@pytest.fixture(scope="module")
def report(report_store, patient) -> dict:
    from flows.patients.build import build_report

    return build_report(report_store, patient)


def test_report_has_every_key_and_adds_up(report, patient):
    assert REPORT_KEYS <= set(report)
    for section, keys in SECTION_KEYS.items():
        assert keys <= set(report[section]), section
    assert report["patient_id"] == patient
    json.dumps(report, allow_nan=False)  # JSON-ready: no NaN, no numpy
    probs = report["diagnosis"]["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    assert report["diagnosis"]["predicted"] == max(probs, key=probs.get)
    mc = report["modality_contributions"]
    assert mc["target_class"] == report["diagnosis"]["predicted"]
    # exact Shapley values over the patient's modalities add up to the predicted class's calibrated probability
    assert mc["base_value"] + sum(mc["values"].values()) == pytest.approx(probs[mc["target_class"]], abs=1e-6)
    has = set(report["modalities"]["diagnosis"])
    assert has >= {"ct", "pet", "expression", "wsi"} and has <= set(mc["values"])
    assert all(v == 0.0 for m, v in mc["values"].items() if m not in has)  # an absent modality contributes 0
    if report["survival"] is not None:  # the run saved a survival model
        assert {"model", "version", "risk", "risk_percentile"} <= set(report["survival"])
        assert 0 < report["survival"]["risk_percentile"] <= 100
    neighbours = report["neighbours"]
    assert len(neighbours) == 5 and patient not in {n["patient_id"] for n in neighbours}
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)


def test_slide_tiles_are_the_feature_files_tiles(report, report_store, patient):
    with h5py.File(report_store / "wsi" / f"{patient}.h5", "r") as f:
        coords, size0 = f["coords_level0"][()], int(f.attrs["tile_size_level0"])
        tile_mpp, tile_px = float(f.attrs["mpp"]), int(f.attrs["tile_size"])
    tiles = report["slide"]["tiles"]
    assert np.array_equal(np.array([[t["x"], t["y"]] for t in tiles]), coords)
    assert {t["size_px"] for t in tiles} == {size0}
    assert report["slide"]["mpp"] == pytest.approx(tile_mpp * tile_px / size0)
    attention = np.array([t["attention"] for t in tiles])
    assert attention.min() >= 0 and attention.sum() == pytest.approx(1.0, abs=1e-5)


def test_radiology_and_spatial_sections_are_the_stores(report, report_store, patient):
    import anndata as ad

    result = json.loads((report_store / "imaging" / "radiology" / patient / "result.json").read_text())
    roi = report["radiology"]["roi"]
    assert (roi["source"], roi["label"]) == (result["roi_row"]["roi_source"], result["roi_row"]["roi"])
    assert roi["volume_ml"] == pytest.approx(result["roi_row"]["volume_ml"])
    # the box holds the ROI the run measured: its voxel count times the voxel volume is the ROI's volume
    box = np.array(roi["bbox"]["ijk_max"]) - np.array(roi["bbox"]["ijk_min"]) + 1
    assert np.prod(box) >= result["roi_row"]["n_voxels_ct"]
    assert report["radiology"]["phenotypes"]["suv_max"] == pytest.approx(result["phenotypes"]["suv_max"])
    adata = ad.read_h5ad(report["spatial"]["sample"])
    region = adata.obs["tumour_region"].to_numpy(bool)
    assert sorted(s["barcode"] for s in report["spatial"]["tumour_spots"]) == sorted(adata.obs_names[region])
    top = report["spatial"]["top_genes"]
    assert [g["log2fc"] for g in top] == sorted((g["log2fc"] for g in top), reverse=True)


def test_target_evidence_is_the_patients_own(report, e2e_run, patient):
    """Each listed target's evidence, recomputed here from the run's input files and stored spatial sample."""
    import anndata as ad

    from flows.catalog.schema import load_catalog
    from omics.gdc import NON_SILENT_CLASSES
    from omics.gdc_download import read_copy_number_download, read_maf_download
    from omics.spatial import spatial_region_enrichment

    store, catalog = e2e_run["store"], load_catalog(e2e_run["data"] / "data_catalog.yaml")
    tumour = ad.read_h5ad(store / "omics" / "tumour_expression.h5ad")
    expr = pd.DataFrame(np.asarray(tumour.X.toarray() if hasattr(tumour.X, "toarray") else tumour.X, dtype=float),
                        index=tumour.obs_names, columns=tumour.var_names)
    cn_src, maf_src = catalog.by_modality("copy_number"), catalog.by_modality("mutations")
    cn = read_copy_number_download(cn_src.sample_sheet, cn_src.path)[0]
    maf = read_maf_download(maf_src.sample_sheet, maf_src.path)[0]
    mine = maf.loc[(maf["patient_id"] == patient) & maf["Variant_Classification"].isin(NON_SILENT_CLASSES)]
    sample = ad.read_h5ad(store / "spatial" / patient / "sample.h5ad")
    enrichment = spatial_region_enrichment(sample, sample.obs["tumour_region"].to_numpy(bool))
    ranking = pd.read_parquet(store / "targets" / "ranking.parquet").sort_values("rank")
    assert [t["gene"] for t in report["targets"]] == list(ranking["gene"].head(len(report["targets"])))
    for t in report["targets"]:
        g, ev = t["gene"], t["evidence"]
        col = expr[g]
        assert ev["expression_z"] == pytest.approx((col[patient] - col.mean()) / col.std(ddof=1), abs=1e-9)
        assert ev["copy_number"] == int(cn.loc[g, patient])
        hits = mine.loc[mine["Hugo_Symbol"] == g]
        assert sorted(ev["mutation"]) == sorted(f"{c} {p}" if isinstance(p, str) and p else str(c)
                                                for c, p in zip(hits["Variant_Classification"], hits["HGVSp_Short"]))
        assert ev["spatial_enrichment"] == pytest.approx(float(enrichment.loc[g, "log2_fold_change"]), abs=1e-9)


def test_new_patient_matches_the_cohort_report(e2e_run, report_store, patient, tmp_path):
    """The patient's CT/PET study and slide copied out as a 'new patient's folder': the frozen encoders give
    the store's very features, and the saved model the cohort's prediction for those modalities."""
    from flows.patients.build import PatientStore
    from flows.patients.new_patient import AFTER_READ, new_patient_report

    data = e2e_run["data"]
    folder = tmp_path / "new"
    for d in (data / "imaging").glob(f"*/{patient}"):
        shutil.copytree(d, folder / d.name)
    for s in (data / "slides").glob(f"{patient}*"):
        shutil.copy(s, folder / s.name)
    new = new_patient_report(folder, report_store)
    ps = PatientStore(report_store)
    for m, feats in new.report["new_patient"]["features"].items():
        stored = ps.embeddings[m].loc[patient, list(feats)].to_numpy(float)
        np.testing.assert_allclose(np.array(list(feats.values())), stored, rtol=0, atol=1e-5)
    view = ps.cohort("diagnosis")
    i, dm = view.index(patient), view.model
    present = np.array([[m in ("ct", "pet", "wsi") for m in dm.modalities]])
    expected = dm.predict(view.dataset.subset([i]), present=present)[0]
    got = np.array([new.report["diagnosis"]["probabilities"][c] for c in dm.classes])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert new.report["slide"]["tiles"] and new.report["radiology"]["roi"]["source"]
    assert set(AFTER_READ) - {"spatial"} <= set(new.timings) and new.after_read_s() > 0  # no Visium sample here


def test_unknown_patient_is_an_error_naming_it(report_store, capsys):
    from flows.cli import main

    assert main(["report", "TCGA-NO-SUCH", "--store", str(report_store)]) == 2
    err = capsys.readouterr().err
    assert "'TCGA-NO-SUCH'" in err and "not in the store" in err


def test_cohort_reports_write_an_index(report_store, patient, tmp_path):
    from flows.patients.cohort_reports import write_cohort_reports

    index = write_cohort_reports(report_store, tmp_path / "all", patients=[patient, "TCGA-NO-SUCH"], render=False)
    rows = json.loads((tmp_path / "all" / "index.json").read_text())["patients"]
    assert [r["patient_id"] for r in rows] == [patient, "TCGA-NO-SUCH"]
    assert rows[0]["error"] is None and (tmp_path / "all" / rows[0]["page"]).is_file()
    assert "not in the store" in rows[1]["error"]
    assert f'href="{patient}/report.json"' in index.read_text()


def test_report_reads_the_stored_roi_and_remeasures_only_an_older_store(report, report_store, patient, tmp_path,
                                                                         monkeypatch):
    """The radiology stage's <patient>_roi.npz (the very mask it measured) gives the box without measuring
    again; a store without it (written before the stage kept the mask) is measured again from the stored
    volumes, and the report says so."""
    from flows.patients import radiology as rad
    from flows.patients.build import PatientStore, build_report
    from flows.stages import radiology_study
    from flows.stages.radiology_study import measure_study, read_roi_npz
    from imaging.ct import read_ct
    from imaging.pet import read_pet_suv
    from imaging.roi import RoiSpec

    src = report_store / "imaging" / "radiology" / patient
    ps = PatientStore(report_store)
    result = json.loads((src / "result.json").read_text())
    assert report["radiology"]["roi"]["from"] in (rad.STORED, rad.REMEASURED)
    # the stage's own measurement (what flows.stages.radiology.measure_radiology writes with the diff applied)
    cfg = ps.run_record.get("config", {})
    ct = read_ct(ps.discovery.cts[patient])
    study = measure_study(ct, read_pet_suv(ps.discovery.pets[patient]), list(ps.discovery.segmentations.get(patient, [])),
                          RoiSpec.from_config(cfg.get("roi"), fallback=cfg.get("roi_fallback", "auto")))
    mask = study.measurement.ct_mask
    assert study.measurement.roi == result["roi_row"]["roi"] and int(mask.sum()) == result["roi_row"]["n_voxels_ct"]
    stores = {}
    for kind in ("stored", "older"):
        view = _view(report_store, tmp_path / kind, own=(f"imaging/radiology/{patient}",))
        shutil.copytree(src, view / "imaging" / "radiology" / patient,
                        ignore=shutil.ignore_patterns(radiology_study.ROI_NPZ.format(patient_id=patient)))
        stores[kind] = view
    npz = study.write_roi(stores["stored"] / "imaging" / "radiology" / patient, patient)
    assert npz == rad.stored_roi_path(stores["stored"] / "imaging" / "radiology" / patient, patient)
    back, info = read_roi_npz(npz, ct.shape)
    assert np.array_equal(back, mask) and (info["label"], info["source"]) == (result["roi_row"]["roi"],
                                                                            result["roi_row"]["roi_source"])
    assert npz.stat().st_size < 0.02 * mask.size  # box + bit-packed mask, compressed

    def no_measuring(*args, **kwargs):
        raise AssertionError("the ROI was measured again although the store keeps it")

    with monkeypatch.context() as m:
        m.setattr(radiology_study, "measure_study", no_measuring)
        stored = build_report(stores["stored"], patient)["radiology"]["roi"]
    older = build_report(stores["older"], patient)["radiology"]["roi"]
    assert (stored["from"], older["from"]) == (rad.STORED, rad.REMEASURED)
    assert stored["mask_npz"] == str(npz) and older["mask_npz"] is None
    assert stored["bbox"] == rad.roi_bbox(mask, ct)  # exactly the stage's ROI
    # the re-measure (PET part from the stored SUV on the CT grid) is close to it, not always equal
    assert np.abs(np.array(older["bbox"]["ijk_min"]) - stored["bbox"]["ijk_min"]).max() <= 2
    assert np.abs(np.array(older["bbox"]["ijk_max"]) - stored["bbox"]["ijk_max"]).max() <= 2


@pytest.fixture(scope="module")
def classical_store(e2e_run, report_store, tmp_path_factory) -> Path:
    """A view of the store whose deployed diagnosis model is the classical baseline (logistic on ct, pet,
    expression and the slide's mean tile feature) chosen by the best selection."""
    from fusion.baseline_runs import run_baseline
    from fusion.deploy import fit_deployed, save_deployed
    from fusion.experiment import ModelResult

    view = _view(report_store, tmp_path_factory.mktemp("classical_store"), own=("models",))
    data, splits, opts = _store_data(e2e_run["store"], view)
    base = run_baseline(data, splits, opts, ["ct", "pet", "expression", "wsi"])
    best = ModelResult("best", "best", base.modalities, None, base.metric, base.folds, base.fold_metrics, base.oof,
                       {"chosen": [base.name] * len(splits)})
    save_deployed(fit_deployed(data, [base, best], opts), view / "models" / "diagnosis")
    return view


def test_a_classical_deployed_model_reports_a_cohort_and_a_new_patient(classical_store, e2e_run, patient,
                                                                        tmp_path):
    from flows.patients.build import PatientStore, build_report
    from flows.patients.new_patient import new_patient_report

    report = build_report(classical_store, patient)
    assert report["diagnosis"]["model"] == "baseline:ct+pet+expression+wsi"
    probs = report["diagnosis"]["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
    mc = report["modality_contributions"]
    assert mc["target_class"] == report["diagnosis"]["predicted"] == max(probs, key=probs.get)
    assert mc["base_value"] + sum(mc["values"].values()) == pytest.approx(probs[mc["target_class"]], abs=1e-6)
    assert set(report["modalities"]["diagnosis"]) == {"ct", "pet", "expression", "wsi"}
    assert report["slide"]["tiles"] and all(t["attention"] is None for t in report["slide"]["tiles"])
    assert len(report["neighbours"]) == 5
    # the patient's folder as a new patient: the classical model's prediction for CT, PET and the slide
    folder = tmp_path / "new"
    for d in (e2e_run["data"] / "imaging").glob(f"*/{patient}"):
        shutil.copytree(d, folder / d.name)
    for s in (e2e_run["data"] / "slides").glob(f"{patient}*"):
        shutil.copy(s, folder / s.name)
    new = new_patient_report(folder, classical_store).report
    view = PatientStore(classical_store).cohort("diagnosis")
    i, dm = view.index(patient), view.model
    present = np.array([[m in ("ct", "pet", "wsi") for m in dm.modalities]])
    expected = dm.predict(view.dataset.subset([i]), present=present)[0]
    np.testing.assert_allclose([new["diagnosis"]["probabilities"][c] for c in dm.classes], expected, rtol=0,
                               atol=1e-6)
    mc = new["modality_contributions"]
    assert mc["values"]["expression"] == 0.0  # a new folder brings no omics
    assert mc["base_value"] + sum(mc["values"].values()) == pytest.approx(expected.max(), abs=1e-6)


def test_new_patient_with_a_visium_sample_gets_the_cohorts_spatial_features(e2e_run, report_store, patient,
                                                                             tmp_path):
    """The patient's CT/PET, slide and Visium sample as a new patient's folder: the sample is processed as the
    run's spatial stage does, its tumour region is the stored sample's, and the cohort reference (what the
    spatial stage now keeps with its features) scores it to the very features the run computed."""
    import pandas as pd

    from flows.patients.build import PatientStore, build_report
    from flows.patients.new_patient import new_patient_report, run_config
    from flows.patients.spatial import REFERENCE_KEY
    from flows.stages.spatial import encode_spatial_samples
    from flows.store.artifacts import load_pickle

    store = e2e_run["store"]
    view = _view(report_store, tmp_path / "store", own=("embeddings/spatial.parquet",))
    samples = []
    for d in sorted((store / "spatial").iterdir()):
        if (d / "result.pkl").is_file():
            res = load_pickle(d / "result.pkl")
            samples.append({**res, "h5ad": str(d / Path(res["h5ad"]).name)})
    cfg = run_config(PatientStore(store))
    frame = encode_spatial_samples(samples, cfg)
    stored = pd.read_parquet(store / "embeddings" / "spatial.parquet")
    np.testing.assert_allclose(frame.loc[stored.index, stored.columns].to_numpy(), stored.to_numpy(), atol=1e-6)
    assert set(frame.attrs[REFERENCE_KEY]) >= {"genes", "pc_genes", "mean", "scale", "loadings", "signature"}
    frame.to_parquet(view / "embeddings" / "spatial.parquet")

    data, folder = e2e_run["data"], tmp_path / "new"
    for d in (data / "imaging").glob(f"*/{patient}"):
        shutil.copytree(d, folder / d.name)
    for s in (data / "slides").glob(f"{patient}*"):
        shutil.copy(s, folder / s.name)
    for s in (data / "spatial").glob(f"{patient}*"):
        (shutil.copytree if s.is_dir() else shutil.copy)(s, folder / s.name)
    new = new_patient_report(folder, view).report
    spatial = new["spatial"]
    assert spatial is not None and spatial["region_from"] == "histology" and spatial["features_note"] is None
    cohort = build_report(view, patient)["spatial"]
    assert sorted(s["barcode"] for s in spatial["tumour_spots"]) == sorted(s["barcode"] for s in cohort["tumour_spots"])
    assert [g["gene"] for g in spatial["top_genes"]] == [g["gene"] for g in cohort["top_genes"]]
    got = new["new_patient"]["features"]["spatial"]
    np.testing.assert_allclose(list(got.values()), stored.loc[patient, list(got)].to_numpy(float), atol=1e-5)

