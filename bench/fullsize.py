"""Full-size inputs through ingest and encoding with bounded memory: a 512x512x300 CT with PET, and a 40x
pyramidal slide of 100k+ tissue tiles. Each step runs in a child process: wall time and peak RSS.

Usage: PYTHONPATH=. python bench/fullsize.py [--quick] [--keep] [--parts ct slide] [--baseline-tree DIR]
Volumes: read, PET resampled onto CT, phenotypes, then a 32^3 patch at 2 mm is sampled and encoded; the
ingest is also timed step by step ("ingest steps"), and with ``--baseline-tree`` (another source tree, e.g.
``git archive HEAD imaging flows fusion | tar -x -C /tmp/base``) the same steps of that tree run in the same
invocation on the same data, as the named baseline of the ratios.
Slides: tissue mask on a low level, stain estimate, tile grid, then tiles are streamed in batches
(read, Macenko, encode) to a feature HDF5. The data (a few GB for the slide) is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from bench.childproc import ROOT, run_child

IMPORTS = """
import torch, flows.stages.radiology, flows.stages.pathology, imaging.tile_encoder, imaging.volume_encoder
"""
GEN_CT = """
from flows.synthetic.fullsize import write_fullsize_ct_pet
RESULT = write_fullsize_ct_pet({d!r}, shape={shape!r})
"""
INGEST_CT = """
from pathlib import Path
from flows.stages.radiology import ingest_radiology
r = ingest_radiology("TCGA-FX-0001", Path({d!r}) / "ct/TCGA-FX-0001", Path({d!r}) / "pet/TCGA-FX-0001",
                     Path({d!r}) / "out", 32, 2.0)
RESULT = {{"phenotypes": r.phenotypes, "pet_error": r.pet_error}}
"""
ENCODE_CT = """
import numpy as np, torch
from imaging.volume_encoder import SECNN3d, embed_volumes
torch.manual_seed(0)
p = np.load({d!r} + "/out/TCGA-FX-0001_patches.npz")
x = np.stack([p["ct_hu"], p["suv_bw"]])[:, None]
emb = embed_volumes(SECNN3d(1, 8).eval(), np.nan_to_num(x))
RESULT = {{"embedding_shape": list(emb.shape)}}
"""
INGEST_STEPS = """
import sys, time
sys.path.insert(0, {tree!r})
from pathlib import Path
from imaging.ct import read_ct
from imaging.pet import read_pet_suv
from imaging.resample import resample_to_reference
from imaging.roi import RoiSpec
from flows.stages.radiology_study import measure_study
T = {{}}
def step(name, fn):
    t = time.perf_counter(); out = fn(); T[name] = round(time.perf_counter() - t, 3); return out
ct = step("read CT", lambda: read_ct(Path({d!r}) / "ct/TCGA-FX-0001"))
suv = step("read PET (SUV)", lambda: read_pet_suv(Path({d!r}) / "pet/TCGA-FX-0001"))
study = step("ROI + phenotypes (auto lesion)", lambda: measure_study(ct, suv, [], RoiSpec()))
on_ct = step("resample PET onto CT", lambda: resample_to_reference(suv, ct, order=1, fill=0.0))
try:  # the separable resampler of imaging.volume (absent from older trees)
    from imaging.volume import axis_map, resample_linear
    del on_ct
    on_ct = ct.with_array(step("resample PET onto CT, separable", lambda: resample_linear(
        suv.array, axis_map(suv, ct), ct.shape, 0.0)), units=suv.units)
except ImportError:
    pass
step("save CT + PET-on-CT npz", lambda: (ct.save_npz(Path({d!r}) / "steps_ct.npz"),
                                         on_ct.save_npz(Path({d!r}) / "steps_suv.npz")))
step("import torch (crop_patch)", lambda: __import__("imaging.volume_encoder"))
RESULT = {{"steps_s": T, "phenotypes": {{k: v for k, v in study.measurement.phenotypes.items()
                                        if isinstance(v, float)}}, "tree": {tree!r}}}
"""
GEN_SLIDE = """
from flows.synthetic.fullsize import write_fullsize_slide
RESULT = write_fullsize_slide({d!r} + "/slide.tiff", tissue_tiles={tiles})
"""
PLAN_SLIDE = """
import pickle
from pathlib import Path
from flows.stages.pathology import plan_slide
plan = plan_slide("TCGA-FX-0001", Path({d!r}) / "slide.tiff", tile_size=64, target_mpp=1.0, min_tissue=0.5, seed=0)
pickle.dump(plan, open({d!r} + "/plan.pkl", "wb"))
RESULT = {{"tiles": len(plan.grid)}}
"""
ENCODE_SLIDE = """
import pickle, torch
from pathlib import Path
from flows.stages.pathology import extract_features
from imaging.tile_encoder import TileEncoder
torch.manual_seed(0)
plan = pickle.load(open({d!r} + "/plan.pkl", "rb"))
extract_features(plan, TileEncoder(32).eval(), Path({d!r}) / "features.h5")
RESULT = {{"tiles": len(plan.grid)}}
"""


CT_STEPS = ("generate CT+PET", "ingest CT+PET", "encode CT/PET patch", "ingest steps", "ingest steps (baseline)")


def _snippets(baseline_tree: str | None) -> list[tuple[str, str]]:
    """(step, code) in the order run; the baseline tree's ingest steps run right after this tree's."""
    steps = [("imports only", IMPORTS), ("generate CT+PET", GEN_CT), ("ingest CT+PET", INGEST_CT),
             ("ingest steps", INGEST_STEPS.replace("{tree!r}", repr(str(ROOT))))]
    if baseline_tree:
        steps.append(("ingest steps (baseline)", INGEST_STEPS.replace("{tree!r}", repr(str(baseline_tree)))))
    return steps + [("encode CT/PET patch", ENCODE_CT), ("generate slide", GEN_SLIDE), ("plan slide", PLAN_SLIDE),
                    ("encode slide tiles", ENCODE_SLIDE)]


def measure(quick: bool, keep: bool = False, parts: tuple[str, ...] = ("ct", "slide"),
            baseline_tree: str | None = None) -> list[dict]:
    """Every step's wall time and peak RSS (full size, or a reduced size with ``quick``) of the parts asked."""
    shape = (60, 256, 256) if quick else (300, 512, 512)
    tiles = 5_000 if quick else 100_000
    d = tempfile.mkdtemp(prefix="fusionrx-fullsize-")
    steps = []
    try:
        for name, code in _snippets(baseline_tree):
            if name != "imports only" and ("ct" if name in CT_STEPS else "slide") not in parts:
                continue
            load = os.getloadavg()[0]
            r = run_child(code.format(d=d, shape=shape, tiles=tiles))
            steps.append({"step": name, "wall_s": round(r["wall_s"], 1), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                          "load_1min_before": round(load, 2), "result": r["result"]})
            print(f"[fullsize] {name}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, load {load:.1f} "
                  f"{r['result'].get('steps_s', '')}", flush=True)
        for s in steps:
            if s["step"] == "generate CT+PET":
                s["disk_mb"] = round(sum(f.stat().st_size for f in Path(d, "ct").rglob("*")) / 2**20, 1)
            if s["step"] == "generate slide":
                s["disk_mb"] = round(Path(d, "slide.tiff").stat().st_size / 2**20, 1)
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    return steps


def _step_rows(by: dict[str, dict], cmd: str) -> list[dict]:
    """One row per ingest step: this tree's seconds against the baseline tree's (when it ran)."""
    ours = by["ingest steps"]["result"]["steps_s"]
    base = by.get("ingest steps (baseline)", {}).get("result", {}).get("steps_s", {})
    return [{"what": f"ingest step: {name}", "ours": sec, "baseline": base.get(name),
             "baseline_name": "baseline tree" if name in base else "", "unit": "s", "command": cmd,
             "ratio": (base[name] / sec if sec > 0 else None) if name in base else None}
            for name, sec in ours.items()]


def rows_from(steps: list[dict], quick: bool) -> list[dict]:
    """Bench rows: peak RSS against the size of the data held whole (what unbounded code would need)."""
    by = {s["step"]: s for s in steps}
    cmd = "PYTHONPATH=. python bench/fullsize.py" + (" --quick" if quick else "")
    rows: list[dict] = []
    base = by["imports only"]["peak_rss_mb"] if "imports only" in by else 0.0  # interpreter + torch + modules
    if "ingest CT+PET" in by:
        shape = by["generate CT+PET"]["result"]["ct_shape"]
        ct_mb = shape[0] * shape[1] * shape[2] * 4 / 2**20  # float32 HU volume
        ing = by["ingest CT+PET"]
        rows.append({"what": f"CT+PET ingest {'x'.join(map(str, shape))} peak RSS above imports",
                     "ours": ing["peak_rss_mb"] - base, "baseline": ct_mb, "baseline_name": "one float32 CT volume",
                     "ratio": (ing["peak_rss_mb"] - base) / ct_mb,
                     "unit": "MB", "command": cmd})
        rows.append({"what": "CT+PET ingest time", "ours": ing["wall_s"], "baseline": None, "baseline_name": "",
                     "ratio": None, "unit": "s", "command": cmd})
    if "ingest steps" in by:
        rows += _step_rows(by, cmd)
    if "encode slide tiles" in by:
        w, h = by["generate slide"]["result"]["size_px"]
        slide_mb = w * h * 3 / 2**20 / 16  # RGB of the level read (1 um/px = level 2 of a 0.25 um/px slide)
        enc = by["encode slide tiles"]
        n = enc["result"]["tiles"]
        rows.append({"what": f"slide encode {n} tiles peak RSS above imports", "ours": enc["peak_rss_mb"] - base,
                     "baseline": slide_mb, "baseline_name": "the 1 um/px level as one RGB array",
                     "ratio": (enc["peak_rss_mb"] - base) / slide_mb,
                     "unit": "MB", "command": cmd})
        rows.append({"what": f"slide encode {n} tiles throughput", "ours": n / enc["wall_s"], "baseline": None,
                     "baseline_name": "", "ratio": None, "unit": "tiles/s", "command": cmd})
    return rows


def run(quick: bool) -> list[dict]:
    """Rows for ``python -m bench``."""
    return rows_from(measure(quick), quick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (60x256x256 CT, 5k-tile slide)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--parts", nargs="+", default=["ct", "slide"], choices=["ct", "slide"])
    ap.add_argument("--baseline-tree", help="another source tree whose ingest steps run as the baseline")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("fullsize.json"))
    args = ap.parse_args()
    steps = measure(args.quick, args.keep, tuple(args.parts), args.baseline_tree)
    args.out.write_text(json.dumps({"machine": platform.platform(), "quick": args.quick, "steps": steps,
                                    "rows": rows_from(steps, args.quick)}, indent=1, default=str))
    for s in steps:
        print(f"{s['step']:<24} {s['wall_s']:>8.1f} s  {s['peak_rss_mb']:>8.0f} MB  {s.get('disk_mb', '')}")
    for r in rows_from(steps, args.quick):
        if r["what"].startswith("ingest step"):
            ratio = f"{r['ratio']:.1f}x" if r["ratio"] else ""
            print(f"{r['what']:<52} {r['ours']:>7.2f} s  baseline {r['baseline'] or float('nan'):>7.2f} s  {ratio}")


if __name__ == "__main__":
    main()
