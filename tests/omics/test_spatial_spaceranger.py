"""The real Space Ranger 1.0 folder (scanpy's test data: 100 genes x 100 spots) in every positions layout
(v1 csv, v2 csv, parquet), h5ad variants of its counts, and the explicit Visium -> slide transform."""

import csv
import json
import shutil

import anndata as ad
import h5py
import numpy as np
import pytest
import scanpy as sc
from PIL import Image

from flows.stages.spatial import link_spots_to_tiles, resolve_slide_transform, spots_in_slide_px
from fusion.errors import SpatialError
from omics.spaceranger import POSITION_COLUMNS, is_spaceranger_folder, read_spaceranger
from omics.spatial import read_spatial
from tests.realdata import realdata_dir


@pytest.fixture(scope="module")
def v1_folder():
    return realdata_dir() / "spatial" / "visium_v1_subsample"


@pytest.fixture(scope="module")
def v1(v1_folder):
    return read_spaceranger(v1_folder)


def _copy_with_positions(src, dst, layout):
    """A copy of the Space Ranger folder whose positions are written in another version's layout."""
    shutil.copytree(src, dst)
    old = dst / "spatial" / "tissue_positions_list.csv"
    import pandas as pd

    table = pd.read_csv(old, header=None, names=POSITION_COLUMNS)
    old.unlink()
    if layout == "v2":
        table.to_csv(dst / "spatial" / "tissue_positions.csv", index=False)
    else:
        table.to_parquet(dst / "spatial" / "tissue_positions.parquet", index=False)
    return dst


def test_real_v1_folder_reads_with_spots_inside_their_images(v1_folder, v1):
    assert is_spaceranger_folder(v1_folder)
    assert v1.shape == (100, 100)
    x = v1.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.sum() > 0
    lib = v1.uns["library_id"]
    assert lib == "visium_v1_subsample"
    meta = v1.uns["spatial"][lib]
    assert meta["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.150015)
    inside = v1.obs["in_tissue"].to_numpy() == 1
    assert inside.all()  # the filtered matrix holds in-tissue spots only
    for res in ("hires", "lowres"):
        h, w = meta["images"][res].shape[:2]
        with Image.open(v1_folder / "spatial" / f"tissue_{res}_image.png") as im:
            assert (w, h) == im.size
        xy = v1.obsm["spatial"][inside] * meta["scalefactors"][f"tissue_{res}_scalef"]
        assert (xy >= 0).all() and (xy[:, 0] < w).all() and (xy[:, 1] < h).all()
    # by hand from the csv: x is pxl_col_in_fullres (6th column), y is pxl_row_in_fullres (5th)
    with open(v1_folder / "spatial" / "tissue_positions_list.csv") as f:
        rows = {r[0]: r for r in csv.reader(f)}
    bc = v1.obs_names[7]
    assert tuple(v1.obsm["spatial"][7]) == (float(rows[bc][5]), float(rows[bc][4]))
    assert (v1.obs.loc[bc, "array_row"], v1.obs.loc[bc, "array_col"]) == (int(rows[bc][2]), int(rows[bc][3]))


def test_our_reader_agrees_with_scanpy_read_visium(v1_folder, v1):
    other = read_spaceranger(v1_folder, reader="scanpy")
    assert list(other.obs_names) == list(v1.obs_names) and list(other.var_names) == list(v1.var_names)
    assert (other.X != v1.X).nnz == 0
    ref = sc.read_visium(v1_folder)  # scanpy's own coordinates, independently
    np.testing.assert_array_equal(ref.obsm["spatial"], v1.obsm["spatial"])


@pytest.mark.parametrize("layout", ["v2", "parquet"])
def test_v2_csv_and_parquet_positions_read_the_same(v1_folder, v1, tmp_path, layout):
    folder = _copy_with_positions(v1_folder, tmp_path / "run" / "outs", layout)
    adata = read_spatial(tmp_path / "run")  # the run folder holding outs/ works too
    assert adata.uns["spatial"]["run"]["metadata"]["positions_file"].startswith("tissue_positions.")
    np.testing.assert_array_equal(adata.obsm["spatial"], v1.obsm["spatial"])
    assert (adata.X != v1.X).nnz == 0 and folder.is_dir()


def test_slide_transform_file_is_read_and_checked(v1_folder, tmp_path):
    folder = tmp_path / "sample"
    shutil.copytree(v1_folder, folder)
    m = [[0.5, 0.0, 100.0], [0.0, 0.5, -20.0], [0.0, 0.0, 1.0]]
    (folder / "slide_transform.json").write_text(json.dumps({"matrix": m}))
    adata = read_spaceranger(folder)
    np.testing.assert_array_equal(adata.uns["slide_transform"], m)
    xy = adata.obsm["spatial"][:3]
    np.testing.assert_allclose(spots_in_slide_px(adata, np.asarray(m))[:3], xy * 0.5 + [100.0, -20.0])
    (folder / "slide_transform.json").write_text(json.dumps({"matrix": [[1, 0, 0], [0, 1, 0], [1, 0, 1]]}))
    with pytest.raises(SpatialError, match=r"slide_transform\.json.*last row"):
        read_spaceranger(folder)


def test_spots_link_to_tiles_only_through_an_explicit_transform(v1, tmp_path):
    # two 1000 px tiles side by side on a slide, cellularity 0.1 (left) and 0.9 (right)
    h5 = tmp_path / "features.h5"
    with h5py.File(h5, "w") as f:
        f["features"] = np.zeros((2, 3), np.float32)
        f["coords_level0"] = np.array([[0, 0], [1000, 0]])
        f["hematoxylin_density"] = np.array([0.1, 0.9], np.float32)
        f.attrs.update({"tile_size_level0": 1000, "mpp": 1.0, "slide_path": "s.tif"})
    assert resolve_slide_transform(v1) is None  # the real folder has none: nothing is assumed
    # map every spot's x into [0, 2000) and y into [0, 1000): a spot lands left or right by its x
    xy = v1.obsm["spatial"]
    lo, hi = xy.min(0), xy.max(0)
    sx, sy = 1999.0 / (hi[0] - lo[0]), 999.0 / (hi[1] - lo[1])
    m = np.array([[sx, 0, -lo[0] * sx], [0, sy, -lo[1] * sy], [0, 0, 1]])
    cell = link_spots_to_tiles(v1, h5, resolve_slide_transform(v1, m.tolist()))
    by_hand = np.where((xy[:, 0] - lo[0]) * sx < 1000, 0.1, 0.9)
    np.testing.assert_allclose(cell, by_hand, rtol=1e-6)
    with pytest.raises(SpatialError, match="catalog.*3x3"):
        resolve_slide_transform(v1, [[1, 0], [0, 1]])


def test_h5ad_counts_in_x_layers_or_raw(v1, tmp_path):
    base = v1.copy()
    lib = base.uns["library_id"]
    base.uns["spatial"][lib]["images"] = {"hires": base.uns["spatial"][lib]["images"]["hires"][:200, :200]}  # small file
    lognorm = sc.pp.log1p(sc.pp.normalize_total(base.copy(), target_sum=1e4, copy=True), copy=True)
    variants = {
        "x.h5ad": base,
        "layer.h5ad": ad.AnnData(lognorm.X, obs=base.obs, var=base.var, obsm=dict(base.obsm), uns=dict(base.uns),
                                 layers={"counts": base.X}),
    }
    raw = lognorm.copy()
    raw.raw = base
    variants["raw.h5ad"] = raw
    for name, adata in variants.items():
        adata.write_h5ad(tmp_path / name)
        got = read_spatial(tmp_path / name)
        assert (got.X != v1.X).nnz == 0, name
        np.testing.assert_array_equal(got.obsm["spatial"], v1.obsm["spatial"])
    lognorm.write_h5ad(tmp_path / "lognorm_only.h5ad")
    with pytest.raises(SpatialError, match=r"lognorm_only\.h5ad.*X is not integer"):
        read_spatial(tmp_path / "lognorm_only.h5ad")


def test_a_folder_that_is_no_spaceranger_output_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpatialError, match="empty.*not a Space Ranger output"):
        read_spatial(tmp_path / "empty")


def test_stage_links_a_space_ranger_sample_only_with_a_transform(v1_folder, tmp_path):
    from flows.stages.spatial import process_spatial_sample

    raw = read_spaceranger(v1_folder)
    h5 = tmp_path / "features.h5"
    coords = np.array([[x, y] for y in range(0, 14000, 1000) for x in range(0, 14000, 1000)])
    with h5py.File(h5, "w") as f:  # a slide of 1000 px tiles whose cellularity grows with x
        f["features"] = np.zeros((len(coords), 2), np.float32)
        f["coords_level0"] = coords
        f["hematoxylin_density"] = (coords[:, 0] / 14000).astype(np.float32)
        f.attrs.update({"tile_size_level0": 1000, "mpp": 1.0, "slide_path": "s.tif"})
    res = process_spatial_sample("P1", v1_folder, h5, tmp_path / "a.h5ad", {"seed": 0})
    assert res["n_linked"] == 0 and res["slide_link"].startswith("not linked") and res["enrichment"] is None
    identity = np.eye(3).tolist()
    res = process_spatial_sample("P1", v1_folder, h5, tmp_path / "b.h5ad", {"seed": 0}, slide_transform=identity)
    out = ad.read_h5ad(res["h5ad"])
    assert res["n_linked"] == out.n_obs and res["enrichment"] is not None
    spots = raw.obsm["spatial"][raw.obs_names.get_indexer(out.obs_names)]  # identity: slide px = Visium px
    np.testing.assert_allclose(out.obs["tile_hematoxylin"], (spots[:, 0] // 1000 * 1000) / 14000, rtol=1e-6)


@pytest.mark.parametrize("damage", ["indices_out_of_range", "indptr_decreasing", "indptr_truncated"])
def test_a_corrupt_matrix_is_a_named_error_not_a_crash(tmp_path, damage):
    """Random bytes over a matrix's index arrays used to reach scipy's sparse indexing and segfault: the
    arrays are checked first, and the error names the file and the dataset."""
    import h5py

    from fusion.errors import SpatialError
    from omics.spaceranger import read_spaceranger

    folder = tmp_path / "S1" / "outs"
    shutil.copytree(realdata_dir("spatial", "visium_v1_subsample"), folder)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "r+") as f:
        m = f["matrix"]
        if damage == "indices_out_of_range":
            idx = m["indices"][()]
            idx[len(idx) // 2] = 10**6
            m["indices"][...] = idx
        elif damage == "indptr_decreasing":
            ptr = m["indptr"][()]
            ptr[len(ptr) // 2] = ptr[-1] + 5
            m["indptr"][...] = ptr
        else:
            ptr = m["indptr"][()]
            del m["indptr"]
            m["indptr"] = ptr[:-3]
    with pytest.raises(SpatialError, match=r"filtered_feature_bc_matrix\.h5: corrupt 10x feature-barcode matrix: matrix/ind"):
        read_spaceranger(folder)
