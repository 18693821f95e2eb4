"""Crash containment at every per-patient door: one damaged file per door (every kind of damage used once or
more), `fusionrx scan` + `fusionrx run` in child processes; the run exits 0, names every damaged file, and
processes the patients whose files are intact."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from bench.fuzz_cohort import KINDS, choose, harness_config, named_records, scan_and_run

pytestmark = pytest.mark.slow  # a scan + run of a damaged cohort as subprocesses

# (door, kind): every door once, every kind of damage at least once; the file is drawn with a fixed seed
PLAN = [
    ("dicom", "truncate"),
    ("slide", "zero_head"),
    ("maf", "random_mid"),
    ("copy_number", "truncate"),
    ("star_counts", "html"),
    ("h5ad", "random_mid"),
    ("spaceranger", "empty"),
]
PATIENT = re.compile(r"TCGA-FX-\d{4}")


@pytest.fixture(scope="module")
def door_cohort(tmp_path_factory):
    """A 12-patient cohort with both spatial doors (h5ad files and Space Ranger folders)."""
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    out = tmp_path_factory.mktemp("doors")
    generate_cohort(out, CohortConfig(n_patients=12, seed=3, frac_spatial=0.6, frac_spaceranger=0.5),
                    progress=lambda m: None)
    return out


def test_every_damaged_file_is_named_and_the_run_survives(door_cohort, tmp_path, children_use_the_harness):
    data, work = tmp_path / "data", tmp_path / "work"
    tiny_config = tmp_path / "run.yaml"
    tiny_config.write_text(harness_config())  # the tiny run config (+ slide verification where the config has it)
    shutil.copytree(door_cohort, data)
    (data / "data_catalog.yaml").unlink()  # the run goes through the catalog that scan writes
    work.mkdir()
    assert {k for _, k in PLAN} == set(KINDS)
    damages = choose(data, len(PLAN), np.random.default_rng(7), plan=PLAN)
    assert [(d.door, d.kind) for d in damages] == PLAN  # the small cohort has a file for every door

    result = scan_and_run(data, work, tiny_config)

    assert result["scan_rc"] == 0, result["scan_log"].read_text()[-3000:]
    from flows import cli

    # completed, the damaged inputs reported and skipped: the CLI's documented status for that (0 before it had one)
    assert result["run_rc"] == cli.EXIT_SKIPPED, result["run_log"].read_text()[-3000:]
    records = named_records(result)
    for d in damages:
        hits = [text for _, text in records if str(data / d.file) in text]
        assert hits, f"{d.door} {d.file} ({d.kind}: {d.detail}) is not named; records: {records}"

    # patients whose CT, slide and spatial files are intact are processed
    store = result["store"]
    damaged = {m.group(0) for d in damages for m in [PATIENT.search(d.file)] if m}
    slides = {p.name[:12] for p in (data / "slides").glob("*.tiff")}
    cts = {p.name for p in (data / "imaging").glob("*/TCGA-FX-*")}
    spatial = {p.name[:12] for p in (data / "spatial").iterdir()}
    for pid in sorted((slides | cts | spatial) - damaged):
        if pid in slides:
            assert (store / "wsi" / f"{pid}.h5").is_file(), pid
        if pid in cts:
            assert (store / "imaging" / "radiology" / pid).is_dir(), pid
        if pid in spatial:
            assert (store / "spatial" / pid).is_dir(), pid
