import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

from flows.synthetic.spatial_writer import hex_spot_grid
from fusion.errors import SpatialError
from omics.spatial import (
    cluster_spots,
    preprocess_spatial,
    read_visium_h5ad,
    region_from_clusters,
    spatial_region_enrichment,
)
from tests.omics.spatial_fixtures import PLANTED, write_planted_visium


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path, region = write_planted_visium(tmp_path_factory.mktemp("visium") / "sample.h5ad", seed=0)
    return path, region


def test_hex_grid_geometry():
    coords, rows, cols = hex_spot_grid((0, 0, 1000, 1000), 100.0)
    assert ((rows % 2) == (cols % 2)).all()
    assert coords.min() >= 0 and coords.max() <= 1000
    # nearest neighbour of every spot is exactly one pitch away (hexagonal lattice)
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(axis=1), 100.0)
    # interior spots have six neighbours at one pitch
    assert (np.isclose(d, 100.0).sum(axis=1) == 6).sum() > 0.5 * len(coords)
    assert np.isclose(d, 100.0).sum(axis=1).max() == 6


def test_read_visium_slots(planted):
    path, region = planted
    adata = read_visium_h5ad(path)
    assert adata.n_obs == region.shape[0] and adata.n_vars == 300
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    library = adata.uns["library_id"]
    assert library == "TCGA-FX-0001_visium"
    assert adata.uns["spatial"][library]["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.1)
    assert adata.uns["spatial"][library]["images"]["hires"].shape == (240, 240, 3)
    assert adata.uns["patient_id"] == "TCGA-FX-0001"
    assert set(adata.obs.columns) >= {"in_tissue", "array_row", "array_col"}


def test_preprocess_enrichment_and_clusters_recover_planted_region(planted):
    path, region = planted
    adata = read_visium_h5ad(path)
    out = preprocess_spatial(adata, seed=0, n_top_genes=200, n_pcs=15, resolution=0.5)
    assert "counts" in out.layers and "X_pca" in out.obsm and "leiden" in out.obs
    # raw counts kept, X is log1p of counts per 10k
    row = np.asarray(out.layers["counts"][0].todense()).ravel()
    np.testing.assert_allclose(np.asarray(out.X[0].todense()).ravel(), np.log1p(row / row.sum() * 1e4), rtol=1e-5)
    region = region[adata.obs_names.get_indexer(out.obs_names)]
    table = spatial_region_enrichment(out, region)
    assert set(table.index[: len(PLANTED)]) == set(PLANTED)
    # planted 6x (log2 2.58); the difference of mean log2(x+1) over spots measures 2.84 here (+1 and the
    # per-spot normalisation move it from the ratio of means)
    assert table.loc[PLANTED, "log2_fold_change"].median() == pytest.approx(np.log2(6.0), abs=0.4)
    assert (table.loc[PLANTED, "fdr"] < 1e-6).all()
    labels = out.obs["leiden"].astype(str).to_numpy()
    jaccard = {c: ((labels == c) & region).sum() / ((labels == c) | region).sum() for c in np.unique(labels)}
    best = max(jaccard, key=jaccard.get)
    assert jaccard[best] > 0.5
    np.testing.assert_array_equal(region_from_clusters(out, [best]), labels == best)
    # seeded: the same clusters again
    again = preprocess_spatial(adata, seed=0, n_top_genes=200, n_pcs=15, resolution=0.5)
    assert adjusted_rand_score(again.obs["leiden"], out.obs["leiden"]) == 1.0


def test_missing_spatial_slot_names_file_and_slot(planted, tmp_path):
    path, _ = planted
    adata = ad.read_h5ad(path)
    del adata.obsm["spatial"]
    broken = tmp_path / "no_spatial.h5ad"
    adata.write_h5ad(broken)
    with pytest.raises(SpatialError, match=r"no_spatial\.h5ad.*obsm\['spatial'\]"):
        read_visium_h5ad(broken)


def test_missing_scalefactor_and_non_integer_counts(planted, tmp_path):
    path, _ = planted
    adata = ad.read_h5ad(path)
    library = next(iter(adata.uns["spatial"]))
    del adata.uns["spatial"][library]["scalefactors"]["spot_diameter_fullres"]
    broken = tmp_path / "no_diameter.h5ad"
    adata.write_h5ad(broken)
    with pytest.raises(SpatialError, match=r"no_diameter\.h5ad.*spot_diameter_fullres"):
        read_visium_h5ad(broken)
    adata = ad.read_h5ad(path)
    sc.pp.log1p(adata)
    lognorm = tmp_path / "lognorm.h5ad"
    adata.write_h5ad(lognorm)
    with pytest.raises(SpatialError, match=r"lognorm\.h5ad.*integer"):
        read_visium_h5ad(lognorm)
    with pytest.raises(SpatialError, match="not found"):
        read_visium_h5ad(tmp_path / "absent.h5ad")


def test_region_enrichment_checks_length(planted):
    adata = read_visium_h5ad(planted[0])
    with pytest.raises(SpatialError, match="entries"):
        spatial_region_enrichment(adata, np.ones(3, dtype=bool))


def test_clustering_on_real_pbmc_counts_agrees_with_shipped_labels():
    # scanpy ships 700 real PBMCs (no download); .raw holds log-normalised expression
    pbmc = sc.datasets.pbmc68k_reduced()
    lognorm = pbmc.raw.to_adata()
    clustered = cluster_spots(lognorm, seed=0, n_top_genes=500, n_pcs=30, n_neighbors=15, resolution=1.0)
    assert adjusted_rand_score(clustered.obs["leiden"], pbmc.obs["louvain"]) > 0.6
