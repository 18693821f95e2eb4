"""The full-size generators (bench/fullsize.py) write valid files, checked at a reduced size: a CT series
read back slice-ordered with the planted HU, PET on the same frame, and a pyramidal 40x slide OpenSlide
opens whose tissue tiles the pipeline's planner finds."""

from __future__ import annotations

import numpy as np
import openslide

from flows.stages.pathology import plan_slide
from flows.synthetic.dicom_writer import LUNG_HU, TISSUE_HU, TUMOUR_HU
from flows.synthetic.fullsize import FULL_CT_SPACING, FULL_CT_THICKNESS, write_fullsize_ct_pet, write_fullsize_slide
from imaging.dicom_series import read_dicom_series


def test_ct_written_slice_by_slice_reads_back_with_the_planted_tissues(tmp_path):
    truth = write_fullsize_ct_pet(tmp_path, shape=(24, 96, 96), seed=2)
    ct = read_dicom_series(truth["ct_dir"])
    assert ct.array.shape == (24, 96, 96)
    hu = ct.array
    assert abs(np.median(hu[12, 44:52, 44:52]) - TISSUE_HU) < 15  # mediastinum between the lungs
    assert np.isclose(np.percentile(hu, 1), -1000, atol=60)  # air outside the body
    assert (np.abs(hu - LUNG_HU) < 40).mean() > 0.05  # the lungs are there
    # the tumour sits in a lung: soft-tissue HU at its planted centre (voxel index from the grid geometry)
    step = np.array([FULL_CT_SPACING[1], FULL_CT_SPACING[0], FULL_CT_THICKNESS])  # x, y, z mm
    origin = -(np.array([96, 96, 24]) - 1) / 2 * step
    i, j, k = np.rint((np.array(truth["tumour_centre_mm"]) - origin) / step).astype(int)
    assert abs(hu[k, j, i] - TUMOUR_HU) < 40
    pet = read_dicom_series(truth["pet_dir"])
    assert pet.array.shape == tuple(truth["pet_shape"])


def test_pyramidal_slide_has_the_requested_tissue_tiles_and_levels(tmp_path):
    info = write_fullsize_slide(tmp_path / "s.tiff", tissue_tiles=400, tile=256, quality=80, bank_px=512)
    assert info["tissue_tiles_level0"] >= 400
    slide = openslide.OpenSlide(info["path"])
    assert slide.level_dimensions[0] == tuple(info["size_px"])
    assert float(slide.properties["openslide.mpp-x"]) == 0.25
    assert len(slide.level_dimensions) == info["levels"] >= 3
    np.testing.assert_allclose(slide.level_downsamples, [2.0**i for i in range(info["levels"])], rtol=1e-3)
    centre = np.asarray(slide.read_region((info["size_px"][0] // 2, info["size_px"][1] // 2), 0, (64, 64)))[..., :3]
    assert centre.mean() < 220  # tissue (stained), not the 240 background
    plan = plan_slide("TCGA-FX-0001", tmp_path / "s.tiff", tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
    # a 64 px tile at 1 um/px is one 256 px level-0 tile: the planner finds about the tissue tiles written
    assert 0.85 * info["tissue_tiles_level0"] <= len(plan.grid) <= 1.25 * info["tissue_tiles_level0"]
