"""FusionRx benchmarks: each hot path against a named baseline, timed in the same run.

Usage: python bench/run_benchmarks.py [--out bench/results.json]
Prints throughput and the speed-up ratio over the baseline; never used as a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_dicom(tmp: Path) -> dict:
    """read_dicom_series (vectorised per-slice rescale, geometry checks) vs a naive pydicom loop."""
    import pydicom

    from flows.synthetic.dicom_writer import ct_geometry, lung_tumour_centre_mm, write_ct_series
    from imaging.dicom_series import read_dicom_series

    rng = np.random.default_rng(0)
    series = tmp / "ct"
    write_ct_series(series, patient_id="TCGA-FX-9999", tumour_centre_mm=lung_tumour_centre_mm(rng, ct_geometry(), 10.0),
                    tumour_radius_mm=10.0, seed=0)
    files = sorted(series.glob("*.dcm"))

    def naive() -> np.ndarray:  # baseline: read, sort by InstanceNumber, rescale slice by slice
        slices = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
        return np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                         for d in slices])

    ours = _best_of(lambda: read_dicom_series(series))
    base = _best_of(naive)
    assert np.allclose(read_dicom_series(series).array, naive())  # same HU either way
    n = len(files)
    return {"name": "dicom_series_read", "unit": "slices/s", "fusionrx": n / ours, "baseline": n / base,
            "baseline_name": "naive pydicom loop (no geometry checks)", "ratio": base / ours}


def bench_tiles(tmp: Path) -> dict:
    """Slide streaming in batches (read, Macenko, encode) vs the same work one tile at a time."""
    from flows.stages.pathology import extract_features, plan_slide
    from flows.synthetic.slide_writer import write_synthetic_slide
    from imaging.slide import open_slide
    from imaging.tile_encoder import TileEncoder
    from imaging.tiling import iter_tiles

    path = tmp / "slide.tiff"
    write_synthetic_slide(path, size_px=(2048, 2048), mpp=0.5, tissue_ellipse=(1024, 1024, 850, 750),
                          tumour_circle=(900, 900, 300), nuclear_density=8.0, nuclear_radius_px=4.0, seed=0)
    plan = plan_slide("TCGA-FX-9999", path, tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
    encoder = TileEncoder(32).eval()

    def per_tile() -> None:  # baseline: one tile per read, normalisation and forward pass
        with open_slide(plan.path) as slide:
            for _, tile in iter_tiles(slide, plan.grid, batch_size=1):
                encoder.encode(plan.normalizer.transform(tile))

    ours = _best_of(lambda: extract_features(plan, encoder, tmp / "f.h5"), repeats=2)
    base = _best_of(per_tile, repeats=2)
    n = len(plan.grid)
    return {"name": "slide_tile_features", "unit": "tiles/s", "fusionrx": n / ours, "baseline": n / base,
            "baseline_name": "one tile at a time", "ratio": base / ours, "tiles": n}


def bench_c_index() -> dict:
    """The product's Harrell c-index (fusion.metrics.c_index: scikit-survival's concordance_index_censored)
    vs the textbook double loop over patient pairs; both must agree to 1e-9."""
    from fusion.metrics import c_index

    rng = np.random.default_rng(0)
    n = 1500
    time_, event, risk = rng.exponential(100, n), rng.random(n) < 0.6, rng.normal(size=n)

    def loop() -> float:
        num = den = 0.0
        for i in range(n):
            if not event[i]:
                continue
            for j in range(n):
                if time_[j] > time_[i]:
                    den += 1
                    num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
        return num / den

    ours = _best_of(lambda: c_index(time_, event, risk))
    base = _best_of(loop, repeats=1)
    assert abs(c_index(time_, event, risk) - loop()) < 1e-9
    return {"name": "c_index", "unit": "pairs/s", "fusionrx": n * n / ours, "baseline": n * n / base,
            "baseline_name": "python double loop", "ratio": base / ours}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as d:
        results = [bench_dicom(Path(d)), bench_tiles(Path(d)), bench_c_index()]
    meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine()}
    for r in results:
        print(f"{r['name']:>22}: {r['fusionrx']:>12.1f} {r['unit']}  vs {r['baseline']:>12.1f} "
              f"({r['baseline_name']})  -> x{r['ratio']:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
