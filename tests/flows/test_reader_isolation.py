"""Radiology, slide and scan readers run isolated (flows.store.isolate): a reader that dies in native code
fails only its own input, named with the signal, and the run goes on and exits 3 (completed, inputs skipped).

The crash is a real ``os.abort()`` (SIGABRT) in the worker process: the stage's worker function is replaced,
in this process, by one of this module's functions that aborts for one patient's CT, slide or file and
calls the real reader otherwise. The replacement is pickled by name, so the worker imports this module and
runs it; the abort kills the worker only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

BAD_CT, BAD_SLIDE = "TCGA-FX-0002", "TCGA-FX-0003"
PIDS = [f"TCGA-FX-{i:04d}" for i in range(1, 5)]


# module-level: the workers import them by name
def measure_or_abort(patient_id: str, *args, **kwargs):
    """flows.stages.radiology.measure_radiology, dying in native code (SIGABRT) for BAD_CT."""
    from flows.stages.radiology import measure_radiology

    if patient_id == BAD_CT:
        os.abort()
    return measure_radiology(patient_id, *args, **kwargs)


def plan_or_abort(patient_id: str, *args, **kwargs):
    """flows.stages.pathology.read_slide_plan, dying in native code (SIGABRT) for BAD_SLIDE."""
    from flows.stages.pathology import read_slide_plan

    if patient_id == BAD_SLIDE:
        os.abort()
    return read_slide_plan(patient_id, *args, **kwargs)


def sniff_or_abort(root: str, paths: list[str]):
    """flows.catalog.scan.sniff_files, dying (SIGABRT) on any batch that holds BAD_SLIDE's slide."""
    from flows.catalog.scan import sniff_files

    if any(Path(p).name.startswith(BAD_SLIDE) for p in paths):
        os.abort()
    return sniff_files(root, paths)


@pytest.fixture(scope="module")
def imaging_cohort(tmp_path_factory) -> Path:
    """A generated 4-patient cohort; its catalog keeps only the CT, PET and slide sources."""
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    data = tmp_path_factory.mktemp("isolation") / "data"
    generate_cohort(data, CohortConfig(n_patients=4, seed=3), progress=lambda m: None)
    catalog = yaml.safe_load((data / "data_catalog.yaml").read_text())
    catalog["sources"] = {k: v for k, v in catalog["sources"].items() if v["modality"] in ("ct", "pet", "wsi")}
    assert set(catalog["sources"]) == {"ct", "pet", "wsi"}
    (data / "imaging_catalog.yaml").write_text(yaml.safe_dump(catalog))
    return data


def test_a_crashing_ct_or_slide_reader_skips_only_that_input(imaging_cohort, tiny_config, prefect_harness,
                                                             monkeypatch, one_torch_thread):
    import flows.stages.pathology as pathology
    import flows.stages.radiology as radiology
    from flows.cli import EXIT_SKIPPED, run_exit_status
    from flows.pipeline import run_pipeline

    monkeypatch.setattr(radiology, "measure_radiology", measure_or_abort)
    monkeypatch.setattr(pathology, "read_slide_plan", plan_or_abort)
    store = imaging_cohort.parent / "store"
    summary = run_pipeline(imaging_cohort / "imaging_catalog.yaml", store, config_path=tiny_config,
                           verbosity="quiet")

    skipped = summary["skipped"]
    ct = [s for s in skipped if s["source"] == "ct"]
    wsi = [s for s in skipped if s["source"] == "wsi"]
    assert len(ct) == 1 and len(wsi) == 1 and len(skipped) == 2, skipped
    assert BAD_CT in ct[0]["file"] and "DicomSeriesError" in ct[0]["error"]
    assert "the reader died in native code (killed by signal SIGABRT (6))" in ct[0]["error"]
    assert wsi[0]["file"].endswith(f"{BAD_SLIDE}-01Z-00-DX1.tiff") and "SlideError" in wsi[0]["error"]
    assert "killed by signal SIGABRT (6)" in wsi[0]["error"] and wsi[0]["file"] in wsi[0]["error"]
    # the run went on: every other patient's radiology and slide features are in the store
    for pid in PIDS:
        assert (store / "imaging" / "radiology" / pid / "result.json").is_file() == (pid != BAD_CT), pid
        assert (store / "wsi" / f"{pid}.h5").is_file() == (pid != BAD_SLIDE), pid
    assert run_exit_status(summary) == EXIT_SKIPPED == 3


def test_a_file_that_kills_the_scan_reader_is_a_problem_and_the_scan_goes_on(imaging_cohort, monkeypatch):
    import flows.catalog.scan as scan_mod

    clean = scan_mod.scan(imaging_cohort)
    monkeypatch.setattr(scan_mod, "sniff_files", sniff_or_abort)
    hit = scan_mod.scan(imaging_cohort)

    bad = str(imaging_cohort.resolve() / "slides" / f"{BAD_SLIDE}-01Z-00-DX1.tiff")
    problems = [p for p in hit["problems"] if p["path"] == bad]
    assert len(problems) == 1, hit["problems"]
    assert problems[0]["error"].startswith(f"CatalogError: {bad}: the reader died in native code (killed by signal "
                                           "SIGABRT (6))")
    # everything else the batch held was read again, one file per worker: the same finds as the clean scan
    assert [p for p in hit["problems"] if p["path"] != bad] == clean["problems"]
    assert BAD_SLIDE not in {pid for pid, mods in hit["patients"].items() if "wsi" in mods}
    clean["patients"][BAD_SLIDE].pop("wsi")
    assert hit["patients"] == clean["patients"] and hit["cohort"] == clean["cohort"]
    assert hit["unrecognised"] == clean["unrecognised"]


def test_scan_isolated_finds_what_scan_in_process_finds(imaging_cohort):
    from flows.catalog.scan import scan

    assert scan(imaging_cohort) == scan(imaging_cohort, isolate=False)
