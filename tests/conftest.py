"""Shared fixtures: one Prefect test harness per session, one generated cohort + pipeline run.

The README's test command runs the suite on two pytest-xdist workers (``-n 2``, the Makefile's ``PYTEST_WORKERS``).
Each worker is a session of its own: ``pytest_xdist_make_scheduler`` below keeps every module's tests together and
every user of a costly session fixture (the e2e run, the tiny run) on one worker, so that no fixture is built twice
for nothing; and each worker's native thread pools are held to one thread, so two workers on two cores do not
oversubscribe them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # before numpy / torch are imported
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

from flows.console import quiet_prefect_env  # noqa: E402

# Before Prefect is imported: analytics and telemetry off (nothing tries the network), task logs quiet.
quiet_prefect_env()

# Import Prefect (through the flow module) once at collection time, so that its console log
# handler binds to the session's stderr and not to a per-test capture that is closed later.
import flows.pipeline  # noqa: F401,E402

E2E_PATIENTS = int(os.environ.get("FUSIONRX_E2E_PATIENTS", "64"))

# Session fixtures that take a minute or more: under xdist, every module that uses one runs on the worker that
# builds it (see pytest_xdist_make_scheduler). Such a module names the fixture in its source (checked below).
SHARED_SESSION_FIXTURES = ("e2e_run", "tiny_run")
TESTS_ROOT = Path(__file__).resolve().parents[1]


def shared_group(module: str) -> str:
    """A test module's unit of work under xdist: the first shared session fixture its source names, else the
    module itself (so a module's tests, which may share module state, stay together too)."""
    text = (TESTS_ROOT / module).read_text()
    return next((f for f in SHARED_SESSION_FIXTURES if re.search(rf"\b{f}\b", text)), module)


SLOW_MODULE = re.compile(r"^pytestmark\s*=.*\bpytest\.mark\.slow\b", re.M)


def unit_rank(unit: str) -> int:
    """Where a unit of work goes in the queue: the shared session fixtures' groups first (in
    SHARED_SESSION_FIXTURES order), then the modules marked slow as a whole (``pytestmark = pytest.mark.slow``:
    each runs a pipeline or a server of its own), then the rest. Dearest first, so that the suite ends on
    short modules on both workers, not on one worker with a long module that started late."""
    if unit in SHARED_SESSION_FIXTURES:
        return SHARED_SESSION_FIXTURES.index(unit)
    return len(SHARED_SESSION_FIXTURES) + (0 if SLOW_MODULE.search((TESTS_ROOT / unit).read_text()) else 1)


def dearest_first(units: dict[str, dict]) -> list[str]:
    """The work units (unit -> its tests) in the order they are handed out: by ``unit_rank``, then more tests
    first (xdist's own order)."""
    return sorted(units, key=lambda u: (unit_rank(u), -len(units[u])))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without the plugin
def pytest_xdist_make_scheduler(config, log):
    """Whole modules as units of work, the users of one costly session fixture merged into one unit: each
    fixture is built on one worker only, once. (xdist's own ``xdist_group`` marks no longer reach its
    scheduler under pytest 9.2, whose node ids ignore the suffix xdist writes, so the grouping lives here.)
    The units are handed out dearest first (``dearest_first``)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_group(nodeid.split("::")[0])

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_ordered", False):  # the first hand-out: the queue is complete
                for unit in dearest_first(self.workqueue):
                    self.workqueue.move_to_end(unit)
                self._ordered = True
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test of the e2e run is ``slow`` (``-m "not slow"`` leaves the whole-pipeline run out locally; CI runs
    it). A module whose tests reach a shared session fixture through another fixture must name it in its
    source, or the scheduler above would build the fixture a second time on another worker."""
    for item in items:
        used = [f for f in SHARED_SESSION_FIXTURES if f in item.fixturenames]
        if "e2e_run" in used:
            item.add_marker(pytest.mark.slow)
        module = item.nodeid.split("::")[0]
        if used and shared_group(module) != used[0]:
            raise pytest.UsageError(f"{module}: {item.name} uses the session fixture {used[0]!r} without naming it "
                                    "in the module (tests/conftest.py groups xdist work by the names)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for the module: tiny networks only add contention on a shared 2-core runner."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for the whole session (started once, ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def children_use_the_harness(prefect_harness):
    """The module's child processes (CLI runs as subprocesses) use the session's Prefect server, through
    PREFECT_API_URL in the environment, instead of each starting a server of its own (a few CPU-s each); the
    URL is yielded, the environment restored after the module. Not for tests of the run's own server."""
    from flows.prefect_server import configured_api_url

    url, before = configured_api_url(), os.environ.get("PREFECT_API_URL")
    assert url, "the Prefect test harness set no API URL"
    os.environ["PREFECT_API_URL"] = url
    try:
        yield url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


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
    truth = generate_cohort(data, CohortConfig(n_patients=E2E_PATIENTS, seed=11, frac_spatial=0.6), progress=lambda m: None)
    # one corrupt DICOM file (truncated) and one corrupt slide (not a TIFF)
    bad_ct_patient = sorted(truth["imaging"])[1]
    # TCIA layout: collection/patient/study/series/1-001.dcm; the truth names each series folder
    bad_ct_file = sorted(Path(truth["imaging"][bad_ct_patient]["ct"]["series_dir"]).glob("*.dcm"))[5]
    bad_ct_file.write_bytes(bad_ct_file.read_bytes()[:200])
    slides = sorted((data / "slides").glob("*.tiff"))
    bad_slide = slides[2]
    bad_slide.write_bytes(b"this is not a pyramidal TIFF" * 100)
    config = root / "run_config.yaml"
    config.write_text("min_patients: 21\n")  # a non-default override the run must record (see test_pipeline_e2e)
    summary = run_pipeline(data / "data_catalog.yaml", store, config_path=config)
    return {"data": data, "store": store, "truth": json.loads((data / "truth.json").read_text()),
            "summary": summary, "bad_ct_file": bad_ct_file, "bad_ct_patient": bad_ct_patient,
            "bad_slide": bad_slide}


TINY_CONFIG = (Path(__file__).resolve().parents[1] / "flows" / "synthetic" / "tiny_run.yaml").read_text()


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    """Run-config overrides that make a whole pipeline run over the 12-patient cohort take seconds."""
    path = tmp_path_factory.mktemp("tinycfg") / "run.yaml"
    path.write_text(TINY_CONFIG)
    return path


def held_out_files(data: Path, pid: str) -> list[Path]:
    """A patient's imaging (its TCIA-style patient folder: CT, PET, RTSTRUCT), slide and spatial inputs
    (h5ad or Space Ranger folder), relative to the cohort folder."""
    files = [p.relative_to(data) for p in (data / "imaging").glob(f"*/{pid}")]
    files += [p.relative_to(data) for sub in ("slides", "spatial") for p in (data / sub).glob(f"{pid}*")]
    return [f for f in files if (data / f).exists()]


def rescan_catalog(data: Path) -> Path:
    """Rewrite a cohort folder's catalog from what is there now (as a user runs `fusionrx scan --out`)."""
    from flows.catalog.scan import scan
    from flows.catalog.write import write_scan_catalog

    catalog = data / "data_catalog.yaml"
    cohort = yaml.safe_load(catalog.read_text())["cohort"] if catalog.exists() else None
    write_scan_catalog(scan(data), catalog, cohort=cohort)
    return catalog


@pytest.fixture(scope="session")
def tiny_cohort(small_cohort, tmp_path_factory) -> dict:
    """The 12-patient cohort with one patient's CT, PET, slide and spatial sample held out (the omics
    tables keep them): adding those files back is 'a new patient's imaging arrives'."""
    truth = json.loads((small_cohort / "truth.json").read_text())
    spatial = {p.name[:12] for p in (small_cohort / "spatial").iterdir()}
    slides = {p.name[:12] for p in (small_cohort / "slides").glob("*.tiff")}
    pid = next(p for p in sorted(truth["imaging"]) if "pet" in truth["imaging"][p] and p in spatial and p in slides)
    data = tmp_path_factory.mktemp("tiny") / "data"
    shutil.copytree(small_cohort, data)
    held = data.parent / "held_out"
    moved = held_out_files(data, pid)
    for rel in moved:
        (held / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(data / rel, held / rel)
    rescan_catalog(data)
    return {"data": data, "catalog": data / "data_catalog.yaml", "held_out": held, "files": moved,
            "patient": pid}


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tiny_config, tmp_path_factory, prefect_harness) -> dict:
    """One uninterrupted pipeline run over the tiny cohort with the tiny config (the reference)."""
    import pandas as pd

    from flows.pipeline import run_pipeline

    store = tmp_path_factory.mktemp("tinystore")
    summary = run_pipeline(tiny_cohort["catalog"], store, config_path=tiny_config, verbosity="quiet")
    return {"store": store, "summary": summary,
            "ranking": pd.read_parquet(store / "targets" / "ranking.parquet"),
            "experiments": pd.read_parquet(store / "metrics" / "experiments.parquet")}
