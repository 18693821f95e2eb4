"""Shared fixtures: one Prefect test harness per session, one generated cohort + pipeline run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# Import Prefect (through the flow module) once at collection time, so that its console log
# handler binds to the session's stderr and not to a per-test capture that is closed later.
import flows.pipeline  # noqa: F401,E402

E2E_PATIENTS = int(os.environ.get("FUSIONRX_E2E_PATIENTS", "64"))


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for the whole session (started once, ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A small generated cohort (12 patients) in real formats, for stage-level tests."""
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    out = tmp_path_factory.mktemp("cohort12")
    generate_cohort(out, CohortConfig(n_patients=12, seed=3), progress=lambda m: None)
    return out


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory, prefect_harness) -> dict:
    """Generate a cohort, break one CT slice and one slide, run the whole Prefect pipeline once."""
    from flows.pipeline import run_pipeline
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("e2e")
    data, store = root / "data", root / "store"
    truth = generate_cohort(data, CohortConfig(n_patients=E2E_PATIENTS, seed=11), progress=lambda m: None)
    # one corrupt DICOM file (truncated) and one corrupt slide (not a TIFF)
    bad_ct_patient = sorted(truth["imaging"])[1]
    # TCIA layout: collection/patient/study/series/1-001.dcm; the truth names each series folder
    bad_ct_file = sorted(Path(truth["imaging"][bad_ct_patient]["ct"]["series_dir"]).glob("*.dcm"))[5]
    bad_ct_file.write_bytes(bad_ct_file.read_bytes()[:200])
    slides = sorted((data / "slides").glob("*.tiff"))
    bad_slide = slides[2]
    bad_slide.write_bytes(b"this is not a pyramidal TIFF" * 100)
    config = root / "run_config.yaml"
    config.write_text("cv_repeats: 3\n")
    summary = run_pipeline(data / "data_catalog.yaml", store, config_path=config)
    return {"data": data, "store": store, "truth": json.loads((data / "truth.json").read_text()),
            "summary": summary, "bad_ct_file": bad_ct_file, "bad_ct_patient": bad_ct_patient,
            "bad_slide": bad_slide}
