"""Target ranking: the weighted evidence percentiles order genes as computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.ranking import RankingConfig, percentile_scores, rank_targets
from fusion.errors import FusionRxError


def test_percentiles_by_hand():
    s = pd.Series([3.0, 1.0, 2.0, np.nan])
    assert percentile_scores(s).tolist() == [1.0, 1 / 3, 2 / 3, 0.0]


def test_gene_with_all_evidence_beats_single_evidence_decoys():
    ev = pd.DataFrame({"de": [5.0, 9.0, 0.1, 0.0], "survival": [3.0, 0.0, 4.0, 0.1],
                       "tractability": [8.0, np.nan, np.nan, 9.0]},
                      index=["TARGET", "DE_ONLY", "SURV_ONLY", "DRUG_ONLY"])
    cfg = RankingConfig(weights={"de": 0.4, "survival": 0.4, "tractability": 0.2})
    out = rank_targets(ev, cfg)
    assert out["gene"].tolist()[0] == "TARGET"
    # by hand: TARGET de pct 0.75, survival 0.75, tractability 0.5 -> 0.4*0.75+0.4*0.75+0.2*0.5 = 0.7
    assert out.loc[out["gene"] == "TARGET", "score"].item() == pytest.approx(0.7)
    assert out["rank"].tolist() == [1, 2, 3, 4]


def test_unknown_evidence_kind_is_an_error():
    with pytest.raises(FusionRxError, match="no weight"):
        rank_targets(pd.DataFrame({"astrology": [1.0]}, index=["G"]))
