"""Does the spatial modality alone reach the planted subtype signal? Cross-validated AUC of the diagnosis from
the spatial patient features, beside the oracle and the tumour region found against the truth.

Usage: PYTHONPATH=. python bench/spatial_signal.py [--patients 40] [--seed 0] [--quick] [--out bench/spatial_signal.json]
A generated cohort where every patient has a slide and a spatial sample (evidence-cohort generator: omics,
slides, spatial only); each sample goes through the pipeline's spatial stage (slide tiles -> hematoxylin
density, process_spatial_sample), then:
- oracle: mean log-normalised expression of the truth's subtype genes in the truth's tumour spots;
- true signal: the generator's latent s_spatial itself (the ceiling of any spatial feature);
- old: the Deep Graph Infomax embedding mean-pooled over all spots (the previous spatial features);
- new: the pipeline's spatial frame now (tumour-region pseudo-bulk principal components), and the same
  with the DGI embedding beside it (spatial_graph_features: true);
- pipeline: the fusion stage's own 'single:spatial' CV (cv_splits x cv_repeats of RunConfig) on old and new.
AUC: logistic regression (z-scored features, C=1), 5-fold stratified CV at patient level, mean over 3
shuffles (one-vs-rest macro AUC when the diagnosis has more than two classes). Never used as a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class MeanColourEncoder:
    """Tile 'features' = mean RGB (the spatial stage reads only the tiles' coordinates and hematoxylin density)."""

    def encode(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return tiles.reshape(len(tiles), -1, 3).mean(axis=1).astype(np.float32)


def cv_auc(x: np.ndarray, y: np.ndarray, repeats: int = 3, folds: int = 5) -> float:
    """Mean over `repeats` shuffles of the 5-fold stratified CV AUC of a z-scored logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    aucs = []
    for r in range(repeats):
        cv = StratifiedKFold(folds, shuffle=True, random_state=r)
        p = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
        aucs.append(roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(y, p, multi_class="ovr"))
    return float(np.mean(aucs))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two boolean masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)


def pipeline_single_auc(frame: pd.DataFrame, y: np.ndarray, cfg: dict) -> float:
    """The pipeline's own 'single:spatial' diagnosis CV (fusion stage: per-fold preprocessing + small network)."""
    from flows.stages.fusion_experiments import run_fusion_experiments

    fcfg = {**cfg, "strategies": (), "single_modalities": ("spatial",)}
    labels = pd.Series([f"class{v}" for v in y], index=frame.index)
    out = run_fusion_experiments({"spatial": frame}, {}, labels, fcfg, parts=("diagnosis",))
    table = out["experiments"]
    return float(table.loc[table["name"] == "single:spatial", "mean"].iloc[0])


def build(out: Path, n_patients: int, seed: int, slide_px: int, pitch: int) -> tuple[list[dict], dict]:
    """Generate the cohort and run the spatial stage on every sample; (samples, truth)."""
    from flows.stages.pathology import extract_features, plan_slide
    from flows.stages.spatial import process_spatial_sample
    from flows.synthetic.cohort import CohortConfig
    from flows.synthetic.evidence_cohort import generate_evidence_cohort

    config = CohortConfig(n_patients=n_patients, seed=seed, frac_slide=1.0, frac_spatial=1.0,
                          slide_size_px=slide_px, spot_pitch_px=pitch)
    truth = generate_evidence_cohort(out / "data", config)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    samples = []
    for pid in truth["spatial"]:
        slide = out / "data" / "slides" / f"{pid}-01Z-00-DX1.tiff"
        plan = plan_slide(pid, slide, tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
        features = extract_features(plan, MeanColourEncoder(), work / f"{pid}.h5")
        samples.append(process_spatial_sample(pid, out / "data" / "spatial" / f"{pid}.h5ad", features,
                                              work / f"{pid}.h5ad", {"seed": 0}))
    return samples, truth


def truth_tumour(adata, circle: list[float]) -> np.ndarray:
    """The generator's tumour spots: spot centres (slide px; identity Visium -> slide affine) in the tumour circle."""
    tx, ty, r = circle
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    return (xy[:, 0] - tx) ** 2 + (xy[:, 1] - ty) ** 2 <= r * r


def measure(samples: list[dict], truth: dict, cfg: dict) -> dict:
    """Every AUC and region agreement of the docstring, as a dict."""
    import anndata as ad
    import scipy.sparse as sp

    from flows.stages.spatial import common_graphs, encode_spatial_samples
    from flows.stages.spatial_pseudobulk import histology_region, signature_region, tumour_signature
    from omics.encoders import embed_spot_graphs, fit_spot_graph_encoder

    pids = [s["patient_id"] for s in samples]
    y = np.array([truth["y"][p] for p in pids])
    adatas = [ad.read_h5ad(s["h5ad"]) for s in samples]
    genes = sorted(set.intersection(*[set(a.var_names) for a in adatas]))
    oracle, j_hist, j_quant, j_sig, tumours, regions = [], [], [], [], [], []
    for a, pid in zip(adatas, pids):
        tum = truth_tumour(a, truth["slides"][pid]["tumour_circle"])
        sub = [g for g in truth["subtype_genes"] if g in a.var_names]
        x = a[:, sub].X
        oracle.append(float(np.asarray(x.toarray() if sp.issparse(x) else x)[tum].mean()))
        region = histology_region(a)
        tumours.append(tum)
        regions.append(region)
        j_hist.append(jaccard(region, tum))
        cell = a.obs["tile_hematoxylin"].to_numpy(dtype=np.float64)  # the previous rule: top cellularity quartile
        j_quant.append(jaccard(np.isfinite(cell) & (cell >= np.nanquantile(cell, 0.75)), tum))
    for i, a in enumerate(adatas):  # the fallback for an unlinked sample: the signature of the other samples
        others = [r if k != i else None for k, r in enumerate(regions)]
        j_sig.append(jaccard(signature_region(a, tumour_signature(adatas, others, genes)), tumours[i]))

    t0 = time.perf_counter()
    new = encode_spatial_samples(samples, cfg).loc[pids]
    new_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    graphs = common_graphs(samples, cfg["spatial_panel_genes"], cfg["spatial_knn"])
    enc, _ = fit_spot_graph_encoder(graphs, embed_dim=cfg["spatial_embed_dim"], epochs=cfg["spatial_encoder_epochs"],
                                    seed=cfg["seed"])
    old = embed_spot_graphs(enc, graphs)
    old_s = time.perf_counter() - t0
    signal = np.array([truth["signals"]["spatial"][p] for p in pids])
    return {
        "n_patients": len(pids), "classes": int(len(np.unique(y))), "n_spots_mean": float(np.mean([a.n_obs for a in adatas])),
        "auc": {"true_signal": cv_auc(signal, y), "oracle": cv_auc(np.array(oracle), y), "old_dgi": cv_auc(old, y),
                "new": cv_auc(new.to_numpy(), y), "new_plus_dgi": cv_auc(np.hstack([new.to_numpy(), old]), y)},
        "pipeline_single_spatial_auc": {
            "old_dgi": pipeline_single_auc(pd.DataFrame(old, index=pids).add_prefix("spatial_dgi_"), y, cfg),
            "new": pipeline_single_auc(new, y, cfg)},
        "new_columns": list(map(str, new.columns)),
        "seconds": {"new_features": new_s, "dgi_fit_embed": old_s},
        "tumour_region_jaccard": {
            "clusters_by_cellularity": {"mean": float(np.mean(j_hist)), "min": float(np.min(j_hist))},
            "cellularity_top_quartile": {"mean": float(np.mean(j_quant)), "min": float(np.min(j_quant))},
            "signature_fallback": {"mean": float(np.mean(j_sig)), "min": float(np.min(j_sig))}},
    }


def run(quick: bool = False, n_patients: int | None = None, seed: int = 0) -> list[dict]:
    """Rows for `python -m bench`: each spatial feature's CV AUC beside the oracle's (ratio = ours / oracle)."""
    res = main_measure(quick, n_patients, seed)
    cmd = "PYTHONPATH=. python bench/spatial_signal.py" + (" --quick" if quick else "")
    oracle = res["auc"]["oracle"]
    return [{"what": f"spatial diagnosis CV AUC: {k} ({res['n_patients']} patients)", "ours": v, "baseline": oracle,
             "baseline_name": "oracle (truth's subtype genes in truth's tumour spots)", "ratio": v / oracle,
             "unit": "AUC", "command": cmd} for k, v in res["auc"].items() if k != "oracle"]


def main_measure(quick: bool, n_patients: int | None, seed: int) -> dict:
    """Build the cohort in a temp folder and measure."""
    from flows.config import RunConfig

    n = n_patients or (24 if quick else 40)
    slide_px, pitch = (1024, 64) if quick else (2048, 96)
    cfg = asdict(RunConfig(seed=0))
    if quick:
        cfg["spatial_encoder_epochs"] = 20
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        samples, truth = build(Path(d), n, seed, slide_px, pitch)
        built = time.perf_counter() - t0
        res = measure(samples, truth, cfg)
    res.update({"seed": seed, "slide_size_px": slide_px, "spot_pitch_px": pitch, "build_seconds": built,
                "signal_shift": truth["config"]["signal_shift"]})
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=None, help="default 40 (24 with --quick)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="cohort seed(s)")
    p.add_argument("--quick", action="store_true", help="24 patients on 1024 px slides, 20 DGI epochs")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "spatial_signal.json")
    args = p.parse_args(argv)
    results = [main_measure(args.quick, args.patients, s) for s in args.seed]
    names = list(results[0]["auc"])
    print(f"{'seed':>4}  {'patients':>8}  " + "  ".join(f"{k:>12}" for k in names) + "  jaccard(region)")
    for r in results:
        print(f"{r['seed']:>4}  {r['n_patients']:>8}  " + "  ".join(f"{r['auc'][k]:>12.3f}" for k in names)
              + f"  {r['tumour_region_jaccard']['clusters_by_cellularity']['mean']:.3f}")
    print("pipeline single:spatial AUC (old DGI -> new): " + ", ".join(
        f"seed {r['seed']}: {r['pipeline_single_spatial_auc']['old_dgi']:.3f} -> "
        f"{r['pipeline_single_spatial_auc']['new']:.3f}" for r in results))
    args.out.write_text(json.dumps({"results": results, "command": "PYTHONPATH=. python bench/spatial_signal.py "
                                    + " ".join(sys.argv[1:] if argv is None else argv)}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
