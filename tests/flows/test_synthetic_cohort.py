"""The generated cohort: real formats that read back to the planted truth."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import openslide
import pytest

from flows.catalog import load_catalog
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.phenotypes import segment_lung_tumour, tumour_phenotypes
from imaging.resample import resample_to_reference


@pytest.fixture(scope="module")
def truth(small_cohort):
    return json.loads((small_cohort / "truth.json").read_text())


def test_catalog_validates_and_truth_is_separate(small_cohort, truth):
    cat = load_catalog(small_cohort / "data_catalog.yaml")
    assert len(cat.sources) == 9
    assert all("truth" not in str(s.path) for s in cat.sources.values())
    assert len(truth["targets"]) == 4 and len(truth["subtype"]) == 12


def test_ct_series_reads_back_planted_hu(small_cohort, truth):
    pid = sorted(truth["imaging"])[0]
    planted = truth["imaging"][pid]["ct"]
    ct = read_ct(small_cohort / "imaging" / "ct" / pid)
    assert ct.units == "HU" and ct.shape == tuple(planted["shape"])
    tumour = segment_lung_tumour(ct)
    assert np.median(ct.array[tumour]) == pytest.approx(planted["tumour_hu"], abs=5)
    # the voxel nearest the planted centre is tumour; the affine maps it back to the planted point
    k, j, i = np.rint(ct.voxel_coords(np.asarray(planted["tumour_centre_mm"]))).astype(int)
    assert tumour[k, j, i]
    assert ct.array[0, 0, 0] == pytest.approx(planted["air_hu"], abs=50)


def test_pet_series_reads_back_planted_suv(small_cohort, truth):
    pid = next(p for p in sorted(truth["imaging"]) if "pet" in truth["imaging"][p])
    planted = truth["imaging"][pid]["pet"]
    suv = read_pet_suv(small_cohort / "imaging" / "pet" / pid)
    assert suv.units == "SUVbw"
    # by hand: SUV = activity [Bq/ml] * weight [g] / (dose [Bq] * 2^(-t/T_half))
    decayed = planted["dose_bq"] * 2.0 ** (-planted["injection_to_scan_s"] / planted["half_life_s"])
    suv_by_hand = planted["tumour_bq_per_ml"] * planted["weight_kg"] * 1000.0 / decayed
    assert suv_by_hand == pytest.approx(planted["tumour_suv"], rel=1e-6)
    k, j, i = np.rint(suv.voxel_coords(np.asarray(planted["tumour_centre_mm"]))).astype(int)
    assert suv.array[k, j, i] == pytest.approx(planted["tumour_suv"], rel=0.05)
    ct = read_ct(small_cohort / "imaging" / "ct" / pid)
    phen = tumour_phenotypes(ct, resample_to_reference(suv, ct))
    assert phen["suv_max"] == pytest.approx(planted["tumour_suv"], rel=0.1)
    r = truth["imaging"][pid]["tumour_radius_mm"]
    assert phen["ct_tumour_volume_ml"] == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=0.2)


def test_slides_open_at_every_level(small_cohort, truth):
    for pid in truth["modalities_present"]["wsi"]:
        path = next((small_cohort / "slides").glob(f"{pid}*.tiff"))
        with openslide.OpenSlide(str(path)) as slide:
            assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5, rel=1e-3)
            w0, h0 = slide.dimensions
            assert slide.level_count >= 3
            for level in range(slide.level_count):
                w, h = slide.level_dimensions[level]
                assert (w, h) == (w0 // 2**level, h0 // 2**level)
                region = np.asarray(slide.read_region((0, 0), level, (32, 32)).convert("RGB"))
                assert region.mean() > 200  # the corner is background glass


def test_spatial_samples_sit_on_their_slide(small_cohort, truth):
    for pid in truth["modalities_present"]["spatial"]:
        a = ad.read_h5ad(small_cohort / "spatial" / f"{pid}.h5ad")
        cx, cy, rx, ry = truth["slides"][pid]["tissue_ellipse"]
        xy = np.asarray(a.obsm["spatial"])
        assert (((xy[:, 0] - cx) / rx) ** 2 + ((xy[:, 1] - cy) / ry) ** 2 <= 1.0 + 1e-9).all()
        assert a.uns["patient_id"] == pid
