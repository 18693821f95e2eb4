"""python -m bench: rows read from a script's results JSON keep each figure with its named baseline and
ratio; modules with run() are discovered and the helpers are not."""

from __future__ import annotations

from bench.__main__ import discover, print_table, rows_from_json


def test_rows_from_results_json_keep_figure_baseline_and_ratio(capsys):
    obj = {"meta": {"cpu": 2}, "results": [
        {"name": "dicom_series_read", "unit": "slices/s", "fusionrx": 120.0, "baseline": 40.0,
         "baseline_name": "naive pydicom loop", "ratio": 3.0},
        {"name": "no_ratio_here", "value": 1.0}]}
    rows = rows_from_json(obj, "python bench/run_benchmarks.py")
    assert rows == [{"what": "dicom_series_read", "ours": 120.0, "baseline": 40.0,
                     "baseline_name": "naive pydicom loop", "ratio": 3.0, "unit": "slices/s",
                     "command": "python bench/run_benchmarks.py"}]
    print_table(rows)
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:4] == ["dicom_series_read", "120", "40", "naive"]


def test_discover_finds_benchmarks_not_helpers():
    names = discover()
    assert {"scaling", "fullsize", "slide_baselines", "run_benchmarks"} <= set(names)
    assert not {"__init__", "__main__", "childproc"} & set(names)
