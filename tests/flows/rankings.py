"""Comparing two target rankings built from the same inputs by different runs (resumed, other runner)."""
import numpy as np
import pandas as pd


def assert_same_ranking(ranking: pd.DataFrame, reference: pd.DataFrame, atol: float = 1e-9, top: int = 20) -> None:
    """Same genes, the same scores (to ``atol``), the same ``top`` genes in the same order, and the same order
    wherever neighbouring scores differ by more than 2 * ``atol``.

    ``atol`` is the run-to-run noise the caller accepts: 1e-9 for a resumed run in the same process layout
    (sums in another order), more across process layouts where torch trains with other thread counts.
    """
    assert set(ranking["gene"]) == set(reference["gene"])
    a, b = ranking.set_index("gene"), reference.set_index("gene").loc[ranking["gene"]]
    diff = {c: float(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)).max())
            for c in a.columns if c != "rank" and pd.api.types.is_numeric_dtype(a[c])}
    assert diff["score"] <= atol, f"scores differ by up to {diff['score']:.3g} (> {atol:g}); per column: {diff}"
    assert list(ranking["gene"][:top]) == list(reference["gene"][:top])
    s = reference["score"].to_numpy()
    gap_before = np.r_[np.inf, np.abs(np.diff(s))]
    gap_after = np.r_[np.abs(np.diff(s)), np.inf]
    distinct = (gap_before > 2 * atol) & (gap_after > 2 * atol)
    assert list(ranking["gene"].to_numpy()[distinct]) == list(reference["gene"].to_numpy()[distinct])
