import anndata as ad
import numpy as np
import pandas as pd
import pytest

from fusion.errors import OmicsFormatError
from omics.cohort import highly_variable, normalise_counts, tumour_samples


def _adata():
    counts = np.array([[10, 30, 60, 900_000 - 100], [0, 0, 0, 5], [1, 1, 1, 1]], dtype=np.float32)
    obs = pd.DataFrame(
        {"patient_id": ["TCGA-FX-0001", "TCGA-FX-0001", "TCGA-FX-0002"], "sample_type_code": [1, 11, 1]},
        index=["TCGA-FX-0001-01A", "TCGA-FX-0001-11A", "TCGA-FX-0002-01A"],
    )
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=list("ABCD")))


def test_normalise_counts_log2_cpm_by_hand():
    adata = _adata()
    out = normalise_counts(adata)
    np.testing.assert_array_equal(out.layers["counts"], adata.X)
    # first sample: library 900000 reads, gene A has 10 reads -> CPM = 10/0.9 = 11.11
    assert out.X[0, 0] == pytest.approx(np.log2(10 / 0.9 + 1), rel=1e-6)
    # all-ones sample: CPM = 250000 each
    np.testing.assert_allclose(out.X[2], np.log2(250_001), rtol=1e-6)
    assert out.uns["normalisation"] == "log2_cpm_plus_1"
    assert adata.X[0, 0] == 10  # input untouched
    with pytest.raises(OmicsFormatError):
        normalise_counts(ad.AnnData(X=-np.ones((2, 2), dtype=np.float32)))


def test_tumour_samples_one_primary_per_patient():
    adata = _adata()
    extra = ad.AnnData(
        X=np.zeros((1, 4), dtype=np.float32),
        obs=pd.DataFrame({"patient_id": ["TCGA-FX-0002"], "sample_type_code": [1]}, index=["TCGA-FX-0002-01B"]),
        var=pd.DataFrame(index=list("ABCD")),
    )
    both = ad.concat([adata, extra], merge="same")
    out = tumour_samples(both)
    assert list(out.obs_names) == ["TCGA-FX-0001", "TCGA-FX-0002"]
    assert list(out.obs["barcode"]) == ["TCGA-FX-0001-01A", "TCGA-FX-0002-01A"]
    np.testing.assert_array_equal(out.X[1], [1, 1, 1, 1])


def test_highly_variable_picks_planted_genes():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, size=(40, 50))
    x[:, [3, 17, 41]] += rng.normal(0, 3, size=(40, 3))
    adata = ad.AnnData(X=x.astype(np.float32), var=pd.DataFrame(index=[f"G{i}" for i in range(50)]))
    out = highly_variable(adata, 3)
    assert list(out.var_names) == ["G3", "G17", "G41"]
    assert (out.var["variance"] > 1).all()
