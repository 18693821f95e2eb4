import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from fusion.errors import OmicsFormatError
from omics.cohort import normalise_counts
from omics.de import benjamini_hochberg, differential_expression, welch_de

PLANTED_LOG2FC = 2.0


def _cohort(seed=0, n_tumour=30, n_normal=30, n_genes=300, n_up=10):
    rng = np.random.default_rng(seed)
    base = rng.lognormal(np.log(300), 1.0, size=n_genes)
    n = n_tumour + n_normal
    is_tumour = np.r_[np.ones(n_tumour, bool), np.zeros(n_normal, bool)]
    mean = np.tile(base, (n, 1))
    up = rng.choice(n_genes, size=n_up, replace=False)
    mean[np.ix_(is_tumour, up)] *= 2**PLANTED_LOG2FC
    # negative binomial with dispersion 0.02 (biological variation between samples)
    r = 50.0
    counts = rng.negative_binomial(r, r / (r + mean))
    obs = pd.DataFrame({"is_tumour": is_tumour}, index=[f"S{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"G{j}" for j in range(n_genes)])
    # CPM divides by library size, which the planted genes inflate in tumours: the expected log2 CPM ratio
    library_shift = np.log2(mean[0].sum() / mean[-1].sum())
    adata = ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var)
    adata.uns["expected_log2fc"] = PLANTED_LOG2FC - library_shift
    return adata, {f"G{j}" for j in up}


def test_planted_up_regulated_genes_rank_top():
    adata, planted = _cohort()
    table = differential_expression(adata)
    top = set(table.index[: len(planted)])
    assert top == planted
    fc = table.loc[sorted(planted), "log2_fold_change"]
    expected = adata.uns["expected_log2fc"]
    assert 1.8 < expected < 2.0
    assert np.all(np.abs(fc - expected) < 0.2)
    assert (table.loc[sorted(planted), "fdr"] < 1e-6).all()
    others = table.drop(index=sorted(planted))
    assert np.abs(others["log2_fold_change"] + (PLANTED_LOG2FC - expected)).median() < 0.1
    np.testing.assert_allclose(
        table["log2_fold_change"], table["mean_tumour"] - table["mean_normal"], rtol=0, atol=1e-9
    )


def test_same_answer_on_normalised_cohort():
    adata, _ = _cohort(seed=1)
    raw = differential_expression(adata)
    normalised = differential_expression(normalise_counts(adata))
    pd.testing.assert_frame_equal(raw, normalised, rtol=1e-5)


def test_welch_matches_scipy_for_one_gene():
    adata, _ = _cohort(seed=2, n_genes=20, n_up=2)
    table = differential_expression(adata)
    logcpm = normalise_counts(adata).X
    g = 5
    t, p = stats.ttest_ind(logcpm[:30, g], logcpm[30:, g], equal_var=False)
    assert table.loc["G5", "t"] == pytest.approx(t, rel=1e-4)
    assert table.loc["G5", "p_value"] == pytest.approx(p, rel=1e-3)


def test_welch_de_dense_sparse_and_log_base_agree_with_scipy():
    """Spatial callers pass sparse log1p (natural log) data: same t and p as scipy on the dense matrix, and
    the fold change is the difference of mean log2(x + 1), the scale the bulk DE reports."""
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.gamma(0.5, 2.0, size=(80, 40)))  # mostly zeros, as in spots
    group = np.arange(80) < 25
    counts[np.ix_(group, [0, 1])] += 6
    log1p = np.log1p(counts.astype(np.float64))
    genes = [f"G{j}" for j in range(40)]
    dense = welch_de(log1p, group, genes, log_base=np.e)
    sparse = welch_de(sp.csr_matrix(log1p.astype(np.float32)), group, genes, log_base=np.e)
    pd.testing.assert_frame_equal(dense, sparse, rtol=1e-5)
    t, p = stats.ttest_ind(log1p[group], log1p[~group], axis=0, equal_var=False)
    np.testing.assert_allclose(dense.loc[genes, "t"], t, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(dense.loc[genes, "p_value"], p, rtol=1e-9, equal_nan=True)
    log2 = np.log2(counts + 1.0)
    np.testing.assert_allclose(dense.loc[genes, "log2_fold_change"],
                               log2[group].mean(0) - log2[~group].mean(0), rtol=0, atol=1e-12)
    assert set(dense.index[:2]) == {"G0", "G1"} and (dense["log2_fold_change"].iloc[:2] > 1).all()
    with pytest.raises(OmicsFormatError, match=">= 2 samples"):
        welch_de(log1p, np.arange(80) < 1, genes)


def test_benjamini_hochberg_by_hand():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2, np.nan]))
    np.testing.assert_allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert np.isnan(q[4])
    p = np.random.default_rng(0).uniform(size=50)
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))


def test_group_checks():
    adata, _ = _cohort(n_tumour=1, n_normal=5)
    with pytest.raises(OmicsFormatError, match=">= 2 samples"):
        differential_expression(adata)
    with pytest.raises(OmicsFormatError, match="subtype"):
        differential_expression(adata, group_key="subtype")
