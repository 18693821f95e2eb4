"""The report's per-model table: secondary survival metrics (td-AUC, IBS, its KM reference) beside the c-index."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.experiments.report import metric_table
from fusion.experiment import ModelResult


def test_table_shows_ibs_with_the_folds_that_support_it():
    fm = [{"c_index": 0.6, "ibs": 0.2, "ibs_km": 0.25, "td_auc": 0.6},
          {"c_index": 0.7, "ibs": float("nan"), "ibs_km": float("nan"), "td_auc": 0.7},
          {"c_index": 0.8, "ibs": 0.1, "ibs_km": 0.2, "td_auc": 0.8}]
    row = ModelResult("single:rna", "single", ["rna"], "cox", "c_index", [0.6, 0.7, 0.8], fm, pd.DataFrame()).row()
    published = {"name": "MCAT", "strategy": "published", "metric": "c_index", "mean": 0.817, "std": 0.01, "folds": []}
    table = metric_table([row, published])
    assert list(table.columns) == ["model", "metric", "mean", "std", "folds", "td_auc", "ibs", "ibs_km"]
    assert table["ibs"].tolist() == ["0.150 [2/3]", ""] and table["ibs_km"].tolist() == ["0.225 [2/3]", ""]
    assert table["td_auc"].tolist() == ["0.700", ""] and table["folds"].tolist() == ["0.600 0.700 0.800", "published"]
    assert table["mean"].tolist() == pytest.approx([0.7, 0.817])
