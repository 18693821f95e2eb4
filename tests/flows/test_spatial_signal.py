"""The spatial modality alone recovers the planted subtype: tumour region found without the truth, tumour-region
pseudo-bulk principal components as the patient features (bench/spatial_signal.py measures it at 40 patients)."""

from __future__ import annotations

from dataclasses import asdict

import anndata as ad
import numpy as np
import pytest

from bench.spatial_signal import MeanColourEncoder, cv_auc, jaccard, truth_tumour
from flows.config import RunConfig
from flows.synthetic.cohort import CohortConfig
from flows.synthetic.evidence_cohort import generate_evidence_cohort
from omics.pseudobulk import log_cpm, region_counts
from omics.spatial import tumour_clusters_by_cellularity, two_means_threshold


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """24 patients, each with a slide and a spatial sample (~130 spots), through the pipeline's spatial stage;
    two subtypes, so that all 24 patients measure how much of the planted subtype signal the features keep."""
    from flows.stages.pathology import extract_features, plan_slide
    from flows.stages.spatial import process_spatial_sample

    root = tmp_path_factory.mktemp("spatial_signal")
    config = CohortConfig(n_patients=24, seed=0, frac_slide=1.0, frac_spatial=1.0, slide_size_px=1024,
                          spot_pitch_px=64, n_diagnoses=2)
    truth = generate_evidence_cohort(root / "data", config)
    samples = []
    for pid in truth["spatial"]:
        plan = plan_slide(pid, root / "data" / "slides" / f"{pid}-01Z-00-DX1.tiff", tile_size=64, target_mpp=1.0,
                          min_tissue=0.5, seed=0)
        features = extract_features(plan, MeanColourEncoder(), root / f"{pid}.h5")
        samples.append(process_spatial_sample(pid, root / "data" / "spatial" / f"{pid}.h5ad", features,
                                              root / f"{pid}.h5ad", {"seed": 0}))
    return {"samples": samples, "truth": truth, "adatas": [ad.read_h5ad(s["h5ad"]) for s in samples]}


def test_spatial_frame_recovers_planted_subtype(cohort):
    from flows.stages.spatial import encode_spatial_samples

    samples, truth = cohort["samples"], cohort["truth"]
    pids = [s["patient_id"] for s in samples]
    y = np.array([truth["y"][p] for p in pids])
    frame = encode_spatial_samples(samples, asdict(RunConfig()))
    assert list(frame.index) == pids
    assert list(frame.columns) == ["spatial_tumour_pc1", "spatial_tumour_pc2"]
    oracle = []
    for a, pid in zip(cohort["adatas"], pids):
        tum = truth_tumour(a, truth["slides"][pid]["tumour_circle"])
        oracle.append(a[:, truth["subtype_genes"]].X.toarray()[tum].mean())
    # the signal is ordinal in the diagnosis: with more than two classes, the extreme ones are compared
    keep = np.isin(y, [y.min(), y.max()])
    x, x_oracle, y = frame.to_numpy()[keep], np.array(oracle)[keep], y[keep]
    auc, auc_oracle = cv_auc(x, y), cv_auc(x_oracle, y)
    assert auc > 0.7, f"spatial frame CV AUC {auc:.3f} (oracle {auc_oracle:.3f})"
    assert auc >= auc_oracle - 0.05, f"spatial frame CV AUC {auc:.3f} far below the oracle's {auc_oracle:.3f}"


def test_tumour_region_matches_truth_with_and_without_the_slide(cohort):
    from flows.stages.spatial_pseudobulk import TUMOUR_REGION_KEY, tumour_regions

    truth, adatas = cohort["truth"], [a.copy() for a in cohort["adatas"]]
    tumours = [truth_tumour(a, truth["slides"][a.uns["patient_id"]]["tumour_circle"]) for a in adatas]
    linked = [jaccard(a.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool), t) for a, t in zip(adatas, tumours)]
    assert np.mean(linked) > 0.9 and min(linked) > 0.6, linked
    # the previous region (top cellularity quartile) overlaps far less: the cluster rule is the improvement
    cells = [a.obs["tile_hematoxylin"].to_numpy(dtype=np.float64) for a in adatas]
    quartile = [jaccard(np.isfinite(c) & (c >= np.nanquantile(c, 0.75)), t) for c, t in zip(cells, tumours)]
    assert np.mean(quartile) < np.mean(linked) - 0.2
    # two samples lose their slide link: their tumour spots come from the others' tumour signature
    for a in adatas[:2]:
        a.obs = a.obs.drop(columns=[TUMOUR_REGION_KEY, "tile_hematoxylin"])
    genes = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    regions = tumour_regions(adatas, genes)
    assert [how for _, how in regions[:3]] == ["signature", "signature", "histology"]
    for (region, _), t in zip(regions[:2], tumours[:2]):
        assert jaccard(region, t) > 0.6


def test_two_means_threshold_and_cluster_region_by_hand():
    cell = np.array([0.20, 0.22, 0.24, 0.26, 0.58, 0.60, np.nan, 0.25])
    # groups {0.20..0.26} (mean 0.234) and {0.58, 0.60} (mean 0.59): cut 0.412
    assert two_means_threshold(cell) == pytest.approx(0.5 * (np.mean([0.20, 0.22, 0.24, 0.26, 0.25]) + 0.59))
    clusters = np.array(["a", "a", "b", "b", "t", "t", "t", "b"])  # the unlinked spot (NaN) joins its cluster 't'
    np.testing.assert_array_equal(tumour_clusters_by_cellularity(cell, clusters),
                                  [False, False, False, False, True, True, True, False])


def test_region_counts_and_log_cpm_by_hand():
    import scipy.sparse as sp

    a = ad.AnnData(sp.csr_matrix(np.array([[1, 2, 0], [3, 0, 5], [7, 1, 1]], dtype=np.float32)))
    a.var_names = ["G1", "G2", "G3"]
    np.testing.assert_array_equal(region_counts(a, np.array([True, False, True]), ["G3", "G1"]), [1.0, 8.0])
    np.testing.assert_allclose(log_cpm(np.array([[1.0, 3.0]])), np.log1p([[250000.0, 750000.0]]))
