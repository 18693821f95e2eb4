"""Slide feature extraction (tiles/s): FusionRx's streamed extractor against its peers on the same slide,
tile grid, stain normaliser and encoder, in one run, on the shared Aperio slide and generated 20x and 40x
slides.

Usage: PYTHONPATH=. python bench/slide_baselines.py [--quick] [--repeats 3] [--out bench/slide_baselines.json]

Peers (each reads, normalises stains and encodes; ours also computes the per-tile hematoxylin density and
writes a compressed HDF5):
- naive: one read_region, normalisation and forward pass per tile;
- CLAM-style (create_patches_fp.py then extract_features_fp.py): coordinates to an HDF5 first, a torch
  Dataset reads each patch with read_region (resized to the patch size with PIL, as CLAM's
  target_patch_size, when the grid reads a larger region) and a DataLoader batches them; features to HDF5;
- OpenSlide DeepZoomGenerator: the same lattice as DeepZoom tiles (get_tile per tile);
- TIAToolbox: WSIReader.read_rect per tile at the grid's mpp (what its PatchExtractor does per patch), when
  tiatoolbox is importable (its pins conflict with this project's torch / numpy / openslide-python / pillow /
  tifffile, so it is not a dependency: install it beside, e.g. `pip install --no-deps --target DIR
  tiatoolbox opencv-python-headless shapely defusedxml universal_pathlib` and PYTHONPATH=DIR).
Each method runs `--repeats` times, interleaved; the best is kept, as tiles per wall second and per CPU second
of this process (on a shared machine the wall figures carry the wait for a core: the load average is printed
with the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
APERIO = ROOT / ".." / "shared" / "realdata" / "wsi" / "CMU-1-Small-Region.svs"
SIDE = {True: 3072, False: 8192}  # px of the generated 20x (0.5 um/px) slide (quick / full)
SIDE40 = {True: 6144, False: 8192}  # px of the generated 40x (0.25 um/px) slide
TILE, MPP, BATCH = 64, 1.0, 64  # the run config's tiling: 64 px tiles at 1 um/px


class CoordsDataset(torch.utils.data.Dataset):
    """CLAM's Whole_Slide_Bag_FP: patches read by coordinate (from the coords HDF5) with read_region."""

    def __init__(self, slide_path: Path, coords_h5: Path):
        with h5py.File(coords_h5, "r") as f:
            self.coords = f["coords"][:]
            self.level, self.size = int(f["coords"].attrs["patch_level"]), int(f["coords"].attrs["patch_size"])
            self.target = int(f["coords"].attrs["target_patch_size"])
        self.slide_path, self.slide = slide_path, None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        import openslide

        if self.slide is None:
            self.slide = openslide.OpenSlide(str(self.slide_path))
        x, y = self.coords[i]
        img = self.slide.read_region((int(x), int(y)), self.level, (self.size, self.size)).convert("RGB")
        if self.size != self.target:
            img = img.resize((self.target, self.target))
        return torch.from_numpy(np.asarray(img).copy())


def _encode_all(batches, plan, encoder, out_h5: Path, coords: np.ndarray) -> int:
    """Normalise and encode RGB batches, write features + coords to HDF5; tiles encoded."""
    feats = [encoder.encode(plan.normalizer.transform(np.asarray(b)), batch_size=BATCH) for b in batches]
    with h5py.File(out_h5, "w") as f:
        f.create_dataset("features", data=np.concatenate(feats))
        f.create_dataset("coords", data=coords)
    return sum(len(x) for x in feats)


def clam_style(plan, encoder, tmp: Path) -> int:
    """Patch (coords -> HDF5), then extract over a DataLoader of read_region patches; tiles done."""
    coords_h5 = tmp / "coords.h5"
    with h5py.File(coords_h5, "w") as f:
        d = f.create_dataset("coords", data=plan.grid.coords_level0)
        d.attrs["patch_level"] = plan.grid.level
        d.attrs["patch_size"] = plan.grid.read_size or plan.grid.tile_size
        d.attrs["target_patch_size"] = plan.grid.tile_size
    loader = torch.utils.data.DataLoader(CoordsDataset(plan.path, coords_h5), batch_size=BATCH, num_workers=0)
    return _encode_all((b.numpy() for b in loader), plan, encoder, tmp / "clam_style.h5", plan.grid.coords_level0)


def _batched(tiles, n: int):
    """Stack an iterator of tiles into arrays of up to n."""
    buf = []
    for t in tiles:
        buf.append(t)
        if len(buf) == n:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def deepzoom(plan, encoder, tmp: Path) -> int:
    """OpenSlide's DeepZoomGenerator: the DeepZoom tile nearest each grid tile (the same tile when the grid
    is a DeepZoom lattice: level-0 px per tile px a power of two)."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    slide = openslide.OpenSlide(str(plan.path))
    dz = DeepZoomGenerator(slide, tile_size=plan.grid.tile_size, overlap=0, limit_bounds=False)
    per_px = plan.grid.tile_size_level0 / plan.grid.tile_size  # level-0 px per output px
    dz_level = dz.level_count - 1 - int(round(np.log2(per_px)))
    step = plan.grid.tile_size * 2 ** (dz.level_count - 1 - dz_level)
    cols, rows = dz.level_tiles[dz_level]
    cells = [(min(int(round(x / step)), cols - 1), min(int(round(y / step)), rows - 1))
             for x, y in plan.grid.coords_level0]
    tiles = (np.asarray(dz.get_tile(dz_level, c)) for c in cells)
    try:
        return _encode_all(_batched(tiles, BATCH), plan, encoder, tmp / "deepzoom.h5", plan.grid.coords_level0)
    finally:
        slide.close()


def tiatoolbox_version() -> str | None:
    """tiatoolbox's version when its WSIReader imports, else None."""
    try:
        import tiatoolbox
        from tiatoolbox.wsicore.wsireader import WSIReader  # noqa: F401
    except Exception:  # ImportError, or a dependency of a version this venv does not hold
        return None
    return str(tiatoolbox.__version__)


def tiatoolbox_peer(plan, encoder, tmp: Path) -> int:
    """TIAToolbox: WSIReader.read_rect of each tile at the grid's mpp (it picks the level and rescales)."""
    from tiatoolbox.wsicore.wsireader import WSIReader

    from imaging.slide import slide_info

    mpp0 = slide_info(plan.path).mpp  # given: TIAToolbox's TIFF reader does not read centimetre resolutions
    wsi = WSIReader.open(str(plan.path), mpp=(mpp0, mpp0))
    size = (plan.grid.tile_size, plan.grid.tile_size)
    tiles = (wsi.read_rect((int(x), int(y)), size, resolution=plan.grid.mpp, units="mpp")[..., :3]
             for x, y in plan.grid.coords_level0)
    return _encode_all(_batched(tiles, BATCH), plan, encoder, tmp / "tiatoolbox.h5", plan.grid.coords_level0)


def naive(plan, encoder, tmp: Path, limit: int | None = None) -> int:
    """One tile at a time: read_region, normalise, encode (first ``limit`` tiles)."""
    import openslide

    from imaging.tiling import read_tile

    slide = openslide.OpenSlide(str(plan.path))
    n = len(plan.grid) if limit is None else min(limit, len(plan.grid))
    for x, y in plan.grid.coords_level0[:n]:
        encoder.encode(plan.normalizer.transform(read_tile(slide, plan.grid, int(x), int(y))[None]), batch_size=1)
    slide.close()
    return n


def ours(plan, encoder, tmp: Path) -> int:
    """FusionRx: flows.stages.pathology.extract_features (tiles, stain, encoder, density, HDF5)."""
    from flows.stages.pathology import extract_features

    extract_features(plan, encoder, tmp / "ours.h5", batch_size=BATCH)
    return len(plan.grid)


def _feature_diff(tmp: Path, name: str) -> float:
    """Max |ours - peer| over the tile features (0.0 when the peer encoded the same tiles)."""
    with h5py.File(tmp / "ours.h5") as f, h5py.File(tmp / f"{name}.h5") as g:
        return float(np.abs(f["features"][:] - g["features"][:]).max())


def methods() -> dict[str, Callable]:
    """Method name -> callable(plan, encoder, tmp) -> tiles done; TIAToolbox only when importable."""
    out = {"ours": ours, "clam_style": clam_style, "deepzoom": deepzoom, "naive": naive}
    if tiatoolbox_version() is not None:
        out["tiatoolbox"] = tiatoolbox_peer
    return out


def measure_slide(path: Path, label: str, repeats: int, tmp: Path) -> dict:
    """tiles/s of every method on one slide (best of `repeats`, interleaved) and feature agreement."""
    from flows.stages.pathology import plan_slide
    from imaging.tile_encoder import TileEncoder

    plan = plan_slide("TCGA-FX-9999", path, tile_size=TILE, target_mpp=MPP, min_tissue=0.5, seed=0)
    torch.manual_seed(0)
    encoder = TileEncoder(32).eval()
    todo = methods()
    naive(plan, encoder, tmp, limit=32)  # warm-up: library load, page cache, first forward passes
    best, best_cpu = dict.fromkeys(todo, 0.0), dict.fromkeys(todo, 0.0)
    for _ in range(repeats):
        for name, fn in todo.items():
            t0, c0 = time.perf_counter(), time.process_time()
            n = fn(plan, encoder, tmp)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
            best_cpu[name] = max(best_cpu[name], n / max(time.process_time() - c0, 1e-9))
    diffs = {k: _feature_diff(tmp, k) for k in todo if k not in ("ours", "naive")}
    return {"slide": label, "tiles": len(plan.grid), "level": plan.grid.level, "read_px": plan.grid.read_size,
            "tiles_per_s": best, "tiles_per_cpu_s": best_cpu, "max_abs_feature_diff": diffs,
            "ratio": {k: best["ours"] / v for k, v in best.items() if k != "ours"},
            "ratio_cpu": {k: best_cpu["ours"] / v for k, v in best_cpu.items() if k != "ours"}}


def measure(quick: bool, repeats: int = 3) -> dict:
    """Every slide's row, with the machine's load average before and after."""
    from flows.synthetic.slide_writer import write_synthetic_slide

    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    slides = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if APERIO.is_file():
            slides.append(measure_slide(APERIO.resolve(), "CMU-1-Small-Region.svs (Aperio, 0.499 um/px)", repeats, tmp))
        for side, mpp, mag in ((SIDE[quick], 0.5, "20x"), (SIDE40[quick], 0.25, "40x")):
            path = tmp / f"generated_{mag}.tiff"
            write_synthetic_slide(path, size_px=(side, side), mpp=mpp, nuclear_density=8.0 * (mpp / 0.5) ** 2,
                                  nuclear_radius_px=4.0 * 0.5 / mpp, seed=0)
            slides.append(measure_slide(path, f"generated {mag} {side} px ({mpp} um/px, JPEG tiled TIFF)",
                                        repeats, tmp))
    return {"slides": slides, "tiatoolbox": tiatoolbox_version(), "openslide": _openslide_versions(),
            "load_average": [load0, os.getloadavg()[0]], "cpus": os.cpu_count(), "tile_px": TILE, "mpp": MPP}


def _openslide_versions() -> str:
    import openslide

    return f"openslide-python {openslide.__version__}, OpenSlide {openslide.__library_version__}"


PEER_NAMES = {"naive": "naive read_region loop (1 tile/step)",
              "clam_style": "CLAM-style coords HDF5 + DataLoader(read_region)",
              "deepzoom": "OpenSlide DeepZoomGenerator.get_tile loop",
              "tiatoolbox": "TIAToolbox WSIReader.read_rect loop"}


def rows(m: dict, quick: bool) -> list[dict]:
    """Table rows (ours vs each peer, per slide)."""
    cmd = "PYTHONPATH=. python bench/slide_baselines.py" + (" --quick" if quick else "")
    out = []
    for s in m["slides"]:
        for k, ratio in s["ratio"].items():
            name = PEER_NAMES[k] + (f" {m['tiatoolbox']}" if k == "tiatoolbox" else "")
            out.append({"what": f"slide features, {s['slide']}, {s['tiles']} tiles of {TILE} px at {MPP} um/px",
                        "ours": s["tiles_per_s"]["ours"], "baseline": s["tiles_per_s"][k], "baseline_name": name,
                        "ratio": ratio, "unit": "tiles/s", "command": cmd})
    return out


def run(quick: bool) -> list[dict]:
    """Rows for ``python -m bench``."""
    return rows(measure(quick, repeats=2 if quick else 3), quick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("slide_baselines.json"))
    args = ap.parse_args()
    m = measure(args.quick, args.repeats)
    print(f"{'slide':52s} {'tiles':>5s} {'method':11s} {'tiles/s':>7s} {'ours/peer':>9s} {'tiles/CPU-s':>11s} "
          f"{'ours/peer':>9s} {'max|dF|':>8s}")
    for s in m["slides"]:
        for k, v in s["tiles_per_s"].items():
            ratio = f"{s['ratio'][k]:9.2f}" if k in s["ratio"] else f"{'':9s}"
            ratio_cpu = f"{s['ratio_cpu'][k]:9.2f}" if k in s["ratio_cpu"] else f"{'':9s}"
            diff = s["max_abs_feature_diff"].get(k)
            print(f"{s['slide'][:52]:52s} {s['tiles']:5d} {k:11s} {v:7.0f} {ratio} {s['tiles_per_cpu_s'][k]:11.0f} "
                  f"{ratio_cpu} " + (f"{diff:8.2g}" if diff is not None else ""))
    print(f"load average {m['load_average'][0]:.1f} -> {m['load_average'][1]:.1f} on {m['cpus']} CPUs; "
          f"{m['openslide']}; tiatoolbox {m['tiatoolbox'] or 'not importable'}")
    args.out.write_text(json.dumps({"machine": platform.platform(), **m, "rows": rows(m, args.quick)}, indent=1))


if __name__ == "__main__":
    main()
