"""Slide tile streaming: tiles/s per format and resolution, and peak memory against slide size.

Usage: python bench/slide_tiles.py [--out bench/slide_tiles.json] [--side 8192]
Prints a table (iter_tiles' row strips beside read_tile one tile at a time, same tiles); never used as a test. Slides are assembled segment by segment from one rendered H&E
patch, so writing them never holds a whole slide in memory either.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _patch() -> np.ndarray:
    from flows.synthetic.slide_writer import HE_STAIN_OD, render_he

    img, _ = render_he(size_px=(1024, 1024), tissue_ellipse=(512, 512, 700, 700), tumour_circle=(400, 400, 250),
                       nuclear_density=20.0, nuclear_radius_px=6.0, seed=0, stain_od=HE_STAIN_OD)
    return img


def write_slide(path: Path, side: int, mpp: float, layout: str, patch: np.ndarray) -> Path:
    """A side x side px slide of repeated patches: layout 'tiled' (OpenSlide generic-tiff, one level) or
    'stripped' (plain TIFF only tifffile reads), deflate-compressed, written segment by segment."""
    import tifffile

    ph = patch.shape[0]
    if layout == "tiled":
        def segments():
            for y in range(0, side, 256):
                for x in range(0, side, 256):
                    yield patch[y % ph : y % ph + 256, x % ph : x % ph + 256]
        kw = {"tile": (256, 256)}
    else:  # tifffile takes whole pages for strips: fill a disk-backed array band by band
        raw = np.memmap(path.with_suffix(".raw"), dtype=np.uint8, mode="w+", shape=(side, side, 3))
        band = np.tile(patch, (1, side // ph, 1))
        for y in range(0, side, ph):
            raw[y : y + ph] = band[: min(ph, side - y)]
        tifffile.imwrite(path, raw, photometric="rgb", rowsperstrip=16, compression="zlib",
                         compressionargs={"level": 1}, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
        del raw
        path.with_suffix(".raw").unlink()
        return path
    tifffile.imwrite(path, segments(), shape=(side, side, 3), dtype=np.uint8, photometric="rgb",
                     compression="zlib", compressionargs={"level": 1}, resolution=(1e4 / mpp, 1e4 / mpp),
                     resolutionunit="CENTIMETER", **kw)
    return path


def tiles_per_s(path: Path, target_mpp: float, tile_size: int, max_tiles: int = 400) -> dict:
    """Tiles/s of read_tile over the first max_tiles tissue tiles (row-major) at target_mpp."""
    from imaging.slide import open_slide
    from imaging.tiling import iter_tiles, read_tile, tile_grid
    from imaging.tissue import tissue_mask

    with open_slide(path) as slide:
        t0 = time.perf_counter()
        mask, down = tissue_mask(slide)
        t_mask = time.perf_counter() - t0
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=target_mpp)
        sub = grid.subset(np.arange(min(max_tiles, len(grid))))
        t0 = time.perf_counter()
        n = sum(len(c) for c, _ in iter_tiles(slide, sub, batch_size=64))
        dt = time.perf_counter() - t0
        vendor = slide.properties.get("openslide.vendor")
    with open_slide(path) as slide:  # a fresh handle: no decoded tile cached from the pass above
        t0 = time.perf_counter()
        for x, y in sub.coords_level0:
            read_tile(slide, sub, int(x), int(y))
        dt_one = time.perf_counter() - t0
    return {"slide": path.name, "reader": vendor, "target_mpp": target_mpp, "tile_size": tile_size,
            "read_size": grid.read_size, "tiles_in_grid": len(grid), "tiles_timed": n, "tiles_per_s": n / dt,
            "tissue_mask_s": t_mask, "what": f"tile streaming, {path.name} at {target_mpp} um/px",
            "ours": n / dt, "baseline": n / dt_one, "ratio": dt_one / dt, "unit": "tiles/s",
            "baseline_name": "read_tile one tile at a time (read_region + PIL per tile)"}


PEAK_SCRIPT = """
import resource, sys, numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from flows.stages.pathology import extract_features, plan_slide
from imaging.tile_encoder import TileEncoder
plan = plan_slide("P", Path(sys.argv[1]), tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
extract_features(plan, TileEncoder(16).eval(), Path(sys.argv[2]))
print(len(plan.grid), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss(path: Path, tmp: Path) -> dict:
    """Peak RSS (MiB) of a fresh process that plans the slide and streams all its tile features to HDF5."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), str(tmp / f"{path.stem}.h5"), str(ROOT)],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"slide": path.name, "tiles": int(out[-2]), "peak_rss_mib": float(out[-1])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "slide_tiles.json")
    ap.add_argument("--side", type=int, default=8192, help="side in px of the large generated slides")
    args = ap.parse_args()
    patch = _patch()
    rows, peaks = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        real = ROOT / ".." / "shared" / "realdata" / "wsi" / "CMU-1-Small-Region.svs"
        if real.is_file():
            rows += [tiles_per_s(real, 0.5, 256), tiles_per_s(real, 1.0, 256)]
        for layout in ("tiled", "stripped"):
            path = write_slide(tmp / f"{layout}_{args.side}.tif", args.side, 0.25, layout, patch)
            rows += [tiles_per_s(path, 0.25, 256), tiles_per_s(path, 1.0, 256)]
        for side in (args.side // 2, args.side):
            path = write_slide(tmp / f"peak_{side}.tif", side, 0.25, "stripped", patch)
            peaks.append(peak_rss(path, tmp))
    print(f"{'slide':28s} {'reader':13s} {'mpp':>5s} {'read px':>7s} {'grid':>6s} {'tiles/s':>8s} {'1-by-1':>8s} "
          f"{'ratio':>6s} {'mask s':>7s}")
    for r in rows:
        print(f"{r['slide']:28s} {r['reader']:13s} {r['target_mpp']:5.2f} {r['read_size']:7d} {r['tiles_in_grid']:6d} "
              f"{r['tiles_per_s']:8.1f} {r['baseline']:8.1f} {r['ratio']:6.2f} {r['tissue_mask_s']:7.2f}")
    print(f"\n{'plain TIFF streamed to HDF5':28s} {'tiles':>7s} {'peak RSS MiB':>13s}")
    for p in peaks:
        print(f"{p['slide']:28s} {p['tiles']:7d} {p['peak_rss_mib']:13.0f}")
    args.out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                                    "tiles": rows, "peak_memory": peaks}, indent=1))


if __name__ == "__main__":
    main()
