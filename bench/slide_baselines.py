"""Slide feature extraction (tiles/s): FusionRx's streamed extractor against a naive read_region loop and a
CLAM-style patch + extract loop, on the same slide, tile grid, stain normaliser and encoder, in one run.

Usage: PYTHONPATH=. python bench/slide_baselines.py [--quick] [--out bench/slide_baselines.json]
naive: one read_region, normalisation and forward pass per tile. CLAM-style (create_patches_fp.py then
extract_features_fp.py): tile coordinates written to an HDF5 first, then a torch Dataset over the coordinates
reads each patch with read_region and a DataLoader batches them into the encoder; features to HDF5.
All three normalise stains and encode alike; ours also computes the per-tile hematoxylin density.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

SIDE = {True: 3072, False: 8192}  # px of the generated 0.5 um/px slide (quick / full)


class CoordsDataset(torch.utils.data.Dataset):
    """CLAM's Whole_Slide_Bag_FP: patches read by coordinate (from the coords HDF5) with read_region."""

    def __init__(self, slide_path: Path, coords_h5: Path):
        with h5py.File(coords_h5, "r") as f:
            self.coords = f["coords"][:]
            self.level, self.size = int(f["coords"].attrs["patch_level"]), int(f["coords"].attrs["patch_size"])
        self.slide_path, self.slide = slide_path, None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        import openslide

        if self.slide is None:
            self.slide = openslide.OpenSlide(str(self.slide_path))
        x, y = self.coords[i]
        img = np.asarray(self.slide.read_region((int(x), int(y)), self.level, (self.size, self.size)))[..., :3]
        return torch.from_numpy(np.ascontiguousarray(img))


def clam_style(plan, encoder, tmp: Path) -> int:
    """Patch (coords -> HDF5), then extract over a DataLoader of read_region patches; tiles done."""
    coords_h5 = tmp / "coords.h5"
    with h5py.File(coords_h5, "w") as f:
        d = f.create_dataset("coords", data=plan.grid.coords_level0)
        d.attrs["patch_level"], d.attrs["patch_size"] = plan.grid.level, plan.grid.tile_size
    loader = torch.utils.data.DataLoader(CoordsDataset(plan.path, coords_h5), batch_size=64, num_workers=0)
    feats = [encoder.encode(plan.normalizer.transform(batch.numpy())) for batch in loader]
    with h5py.File(tmp / "clam_features.h5", "w") as f:
        f.create_dataset("features", data=np.concatenate(feats))
        f.create_dataset("coords", data=plan.grid.coords_level0)
    return sum(len(x) for x in feats)


def naive(plan, encoder, limit: int) -> int:
    """One tile at a time: read_region, normalise, encode (first ``limit`` tiles)."""
    import openslide

    from imaging.tissue import rgba_to_rgb

    slide = openslide.OpenSlide(str(plan.path))
    size = (plan.grid.tile_size, plan.grid.tile_size)
    for x, y in plan.grid.coords_level0[:limit]:
        tile = rgba_to_rgb(np.asarray(slide.read_region((int(x), int(y)), plan.grid.level, size)))[None]
        encoder.encode(plan.normalizer.transform(tile), batch_size=1)
    slide.close()
    return min(limit, len(plan.grid))


def measure(quick: bool) -> dict:
    """tiles/s of each method on one generated slide."""
    from flows.stages.pathology import extract_features, plan_slide
    from flows.synthetic.slide_writer import write_synthetic_slide
    from imaging.tile_encoder import TileEncoder

    torch.set_num_threads(1)
    side = SIDE[quick]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "slide.tiff"
        write_synthetic_slide(path, size_px=(side, side), mpp=0.5, nuclear_density=8.0, nuclear_radius_px=4.0,
                              seed=0)
        plan = plan_slide("TCGA-FX-9999", path, tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
        torch.manual_seed(0)
        encoder = TileEncoder(32).eval()
        out = {"tiles": len(plan.grid), "slide_px": side}
        naive(plan, encoder, limit=32)  # warm-up: library load, page cache, first forward passes
        t0 = time.perf_counter()
        extract_features(plan, encoder, tmp / "ours.h5")
        out["ours"] = len(plan.grid) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = clam_style(plan, encoder, tmp)
        out["clam_style"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = naive(plan, encoder, limit=len(plan.grid) if not quick else min(len(plan.grid), 600))
        out["naive"] = n / (time.perf_counter() - t0)
        with h5py.File(tmp / "ours.h5") as f, h5py.File(tmp / "clam_features.h5") as g:
            out["max_abs_feature_diff_vs_clam"] = float(np.abs(f["features"][:] - g["features"][:]).max())
    return out


def run(quick: bool) -> list[dict]:
    """Rows for ``python -m bench``."""
    m = measure(quick)
    cmd = "PYTHONPATH=. python bench/slide_baselines.py" + (" --quick" if quick else "")
    what = f"slide features, {m['tiles']} tiles of 64 px at 1 um/px"
    return [{"what": what, "ours": m["ours"], "baseline": m[k], "baseline_name": name, "ratio": m["ours"] / m[k],
             "unit": "tiles/s", "command": cmd}
            for k, name in (("naive", "naive read_region loop (1 tile/step)"),
                            ("clam_style", "CLAM-style coords HDF5 + DataLoader(read_region)"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("slide_baselines.json"))
    args = ap.parse_args()
    m = measure(args.quick)
    args.out.write_text(json.dumps({"machine": platform.platform(), **m}, indent=1))
    print(json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
