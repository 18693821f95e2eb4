"""`fusionrx schedule` builds a cron deployment of the pipeline; `fusionrx status` and the HTML run report
show a run's per-stage counts and failures."""

from __future__ import annotations

import argparse
import json

from flows.cli import main
from flows.commands.schedule import build_deployment


def test_schedule_builds_a_cron_deployment_with_absolute_paths(tiny_cohort, tmp_path):
    args = argparse.Namespace(catalog=tiny_cohort["catalog"], store=tmp_path / "store", config=None,
                              cron="0 2 * * *", name="nightly")
    dep = build_deployment(args)
    assert dep.name == "nightly" and dep.schedules[0].schedule.cron == "0 2 * * *"
    assert dep.parameters == {"catalog_path": str(tiny_cohort["catalog"].resolve()),
                              "store_path": str((tmp_path / "store").resolve()), "config_path": None,
                              "verbosity": "quiet"}


def test_status_and_report_list_the_run_counts_and_failures(tiny_run, capsys):
    store, summary = tiny_run["store"], tiny_run["summary"]
    assert main(["status", "--store", str(store), "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    rec = next(r for r in runs if r["run_id"] == summary["run_id"])
    assert rec["counts"] == summary["counts"]
    # the generator plants two unparseable SMILES in the compound table: both reported, both listed
    assert len(rec["skipped"]) == len(summary["skipped"]) >= 2
    assert main(["status", "--store", str(store)]) == 0
    text = capsys.readouterr().out
    assert f"run {summary['run_id']}" in text and "radiology" in text and "not parseable" in text
    html = (store / "runs" / f"{summary['run_id']}.html").read_text()
    assert "<td>radiology</td>" in html and "not parseable" in html and rec["top_targets"][0] in html
