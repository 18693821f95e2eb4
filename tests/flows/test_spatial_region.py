"""One tumour region per spatial sample: the `spatial_tumour_region` evidence and the pseudo-bulk features use
the same spots (stored in obs['tumour_region']), which match the generator's planted tumour; the web page's
spatial picture finds the samples `run` writes (STORE/spatial/<patient>/sample.h5ad) and flat h5ad files."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from bench.spatial_signal import MeanColourEncoder, jaccard, truth_tumour
from flows.synthetic.cohort import CohortConfig
from flows.synthetic.evidence_cohort import generate_evidence_cohort
from fusion.errors import QueryError


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    """Three generated spatial samples with their slides, each through the pipeline's own spatial task into a
    store (the layout `run` writes); the planted truth beside them."""
    from flows import tasks as T
    from flows.stages.pathology import extract_features, plan_slide

    root = tmp_path_factory.mktemp("spatial_region")
    data, store = root / "data", root / "store"
    truth = generate_evidence_cohort(data, CohortConfig(n_patients=8, seed=2, frac_slide=1.0, frac_spatial=1.0,
                                                        slide_size_px=1024, spot_pitch_px=64), max_spatial=3)
    samples = []
    for pid in truth["spatial"]:
        plan = plan_slide(pid, data / "slides" / f"{pid}-01Z-00-DX1.tiff", tile_size=64, target_mpp=1.0,
                          min_tissue=0.5, seed=0)
        features = extract_features(plan, MeanColourEncoder(), root / f"{pid}.h5")
        out = T.spatial_task.fn(pid, str(data / "spatial" / f"{pid}.h5ad"), str(features), {"sample": pid},
                                str(store), {"seed": 0}, "run-1")
        assert out.status == "new", out
        samples.append(out.value)
    return {"store": store, "data": data, "truth": truth, "samples": samples,
            "adatas": [ad.read_h5ad(s["h5ad"]) for s in samples]}


def test_evidence_and_features_use_one_region_that_matches_the_truth(run_store):
    from flows.stages.spatial_pseudobulk import TUMOUR_REGION_KEY, tumour_region, tumour_regions
    from omics.spatial import spatial_region_enrichment

    truth, samples, adatas = run_store["truth"], run_store["samples"], run_store["adatas"]
    assert [s["h5ad"] for s in samples] == [str(run_store["store"] / "spatial" / p / "sample.h5ad")
                                            for p in truth["spatial"]]
    genes = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    features = tumour_regions(adatas, genes)  # what the pseudo-bulk features use
    for s, a, (feature_region, how) in zip(samples, adatas, features):
        stored = a.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool)
        # the evidence: the stored enrichment is the one of the stored region, recomputed from the stored sample
        pd.testing.assert_frame_equal(s["enrichment"], spatial_region_enrichment(a, stored))
        assert how == "histology"
        np.testing.assert_array_equal(feature_region, stored)
        np.testing.assert_array_equal(tumour_region(a), stored)  # one definition, recomputed from the stored inputs
        planted = truth_tumour(a, truth["slides"][s["patient_id"]]["tumour_circle"])
        assert jaccard(stored, planted) >= 0.95, (s["patient_id"], jaccard(stored, planted))
        # the planted targets (+1.6 log expression in the tumour) are enriched in that region
        enr = s["enrichment"].loc[[g for g in truth["targets"] if g in s["enrichment"].index]]
        assert len(enr) and (enr["t"] > 0).all() and (enr["log2_fold_change"] > 1.0).all(), enr


def test_one_sample_alone(run_store, tmp_path):
    """A site with a single spatial sample: its region and evidence need no other sample; unlinked, the
    pseudo-bulk region falls back to every spot and the sample keeps no tumour_region."""
    from flows.stages.spatial import process_spatial_sample
    from flows.stages.spatial_pseudobulk import TUMOUR_REGION_KEY, tumour_regions

    a = run_store["adatas"][0]
    [(region, how)] = tumour_regions([a], list(a.var_names))
    assert how == "histology" and np.array_equal(region, a.obs[TUMOUR_REGION_KEY].to_numpy(dtype=bool))
    pid = run_store["truth"]["spatial"][0]
    res = process_spatial_sample(pid, run_store["data"] / "spatial" / f"{pid}.h5ad", None, tmp_path / "s.h5ad",
                                 {"seed": 0})
    assert res["enrichment"] is None and res["slide_link"] == "no slide features"
    unlinked = ad.read_h5ad(res["h5ad"])
    assert TUMOUR_REGION_KEY not in unlinked.obs.columns
    [(region, how)] = tumour_regions([unlinked], list(unlinked.var_names))
    assert how == "all spots" and region.all()


def test_spatial_picture_on_a_store_written_by_run(run_store, tmp_path):
    from flows.serving.spatial_figure import gene_spatial_panels, gene_spatial_png, spatial_sample_files

    store, truth, adatas = run_store["store"], run_store["truth"], run_store["adatas"]
    assert [name for name, _ in spatial_sample_files(store)] == sorted(truth["spatial"])
    gene = next(g for g in truth["targets"] if all(g in a.var_names for a in adatas))  # has spatial evidence
    panels = gene_spatial_panels(store, gene.lower())
    assert len(panels) == 3
    by_pid = {s["patient_id"]: a for s, a in zip(run_store["samples"], adatas)}
    for p in panels:
        a = by_pid[p.sample]
        np.testing.assert_allclose(p.expression, a[:, gene].X.toarray().ravel())
        np.testing.assert_array_equal(p.tumour_region, a.obs["tumour_region"].to_numpy(dtype=bool))
        assert p.expression[p.tumour_region].mean() > p.expression[~p.tumour_region].mean()
    assert len(gene_spatial_panels(store, gene, max_panels=2)) == 2
    png = gene_spatial_png(store, gene)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(QueryError, match="not measured in any spatial sample.*3 sample"):
        gene_spatial_panels(store, "NOT_A_GENE")
    # the flat layout (spatial/<name>.h5ad) is still read; temp files are not
    flat = tmp_path / "flat"
    (flat / "spatial").mkdir(parents=True)
    adatas[0].write_h5ad(flat / "spatial" / "P1.h5ad")
    adatas[1].write_h5ad(flat / "spatial" / ".P2.h5ad.tmp.h5ad")
    [panel] = gene_spatial_panels(flat, gene)
    assert panel.sample == "P1" and len(panel.expression) == adatas[0].n_obs
