"""Tile encoders on the CPU: tiles/s of the built-in tile CNN against pretrained-style timm networks.

Usage: python bench/tile_encoders.py [--tiles 256] [--threads 2] [--batch 32] [--out bench/tile_encoders.json]
Prints a table; never used as a test. Every network has random weights, written to a temp file and read
back through imaging.pretrained_encoder.load_encoder (the product's loading path). The built-in TileEncoder
(default size: 32 features, widths 16/32/64) sees 64 px tiles as in the pipeline today; the timm networks
see 224 px tiles: ResNet50 truncated after layer3 (CLAM's 1024-d 'resnet50_trunc', mean-pooled) and
ViT-S/16 (class token). Timing excludes loading and one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, config value without weights, tile px)
ENCODERS = [
    ("builtin", None, 64),
    ("resnet50_trunc", {"kind": "timm", "model": "resnet50", "pooling": "mean",
                        "model_kwargs": {"features_only": True, "out_indices": [3]}}, 224),
    ("vit_small_patch16_224", {"kind": "timm", "model": "vit_small_patch16_224", "pooling": "cls"}, 224),
]


def _embedder(config: dict | None, tmp: Path):
    """A TileEmbedder with random weights, loaded from a temp weights file like a real one."""
    from imaging.pretrained_encoder import (
        TileEmbedder,
        TileEncoderSpec,
        _import_timm,
        load_encoder,
    )
    from imaging.tile_encoder import TileEncoder

    with torch.random.fork_rng():
        torch.manual_seed(0)
        if config is None:
            return TileEmbedder.from_builtin(TileEncoder().eval())
        net = _import_timm().create_model(config["model"], pretrained=False, num_classes=0)
    weights = tmp / f"{config['model']}.pth"
    torch.save(net.state_dict(), weights)
    return load_encoder(TileEncoderSpec.from_config({**config, "weights": str(weights)}))


def measure(n_tiles: int, threads: int, batch: int) -> list[dict]:
    """tiles/s of each encoder on n_tiles random RGB tiles (the builtin gets 4x as many: it is fast)."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as d:
        for label, config, px in ENCODERS:
            emb = _embedder(config, Path(d))
            n = n_tiles * 4 if config is None else n_tiles
            tiles = rng.integers(0, 256, size=(n, px, px, 3), dtype=np.uint8)
            emb.embed(tiles[:batch], batch_size=batch)  # warm-up
            t0 = time.perf_counter()
            feats = emb.embed(tiles, batch_size=batch)
            dt = time.perf_counter() - t0
            out.append({"encoder": label, "name": emb.name, "tile_px": px, "feature_dim": emb.feature_dim,
                        "tiles": n, "seconds": round(dt, 3), "tiles_per_s": round(n / dt, 1)})
            assert feats.shape == (n, emb.feature_dim)
    return out


def rows(results: list[dict], command: str) -> list[dict]:
    """Rows for `python -m bench`: each pretrained encoder against the builtin (ratio < 1: slower)."""
    base = next(r for r in results if r["encoder"] == "builtin")
    return [{"what": f"tile encoder {r['encoder']} ({r['tile_px']} px) tiles/s, CPU", "ours": r["tiles_per_s"],
             "baseline": base["tiles_per_s"], "baseline_name": f"builtin TileEncoder ({base['tile_px']} px)",
             "ratio": round(r["tiles_per_s"] / base["tiles_per_s"], 4), "unit": "tiles/s", "command": command}
            for r in results if r is not base]


def run(quick: bool) -> list[dict]:
    n = 64 if quick else 256
    return rows(measure(n, 2, 32), f"PYTHONPATH=. python bench/tile_encoders.py --tiles {n}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=256, help="tiles per timm encoder (4x for the builtin)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    command = f"PYTHONPATH=. python bench/tile_encoders.py --tiles {args.tiles} --threads {args.threads} " \
              f"--batch {args.batch}"
    results = measure(args.tiles, args.threads, args.batch)
    print(f"{'encoder':<24}{'name':<30}{'tile px':>8}{'dim':>6}{'tiles':>7}{'s':>8}{'tiles/s':>9}")
    for r in results:
        print(f"{r['encoder']:<24}{r['name']:<30}{r['tile_px']:>8}{r['feature_dim']:>6}{r['tiles']:>7}"
              f"{r['seconds']:>8.2f}{r['tiles_per_s']:>9.1f}")
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}; command: {command}")
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.platform(), "threads": args.threads,
                                        "batch": args.batch, "results": results,
                                        "rows": rows(results, command)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
