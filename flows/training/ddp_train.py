"""Entry point: train the tile encoder with DistributedDataParallel under torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m flows.training.ddp_train \
        --tiles tiles.npy --out tile_encoder.pt --epochs 8 [--report report.json]

(multi-node: torchrun --nnodes N --node_rank R --rdzv_endpoint HOST:29500 ...). ``--tiles`` is a .npy
of uint8 RGB tiles [N,H,W,3] (e.g. sampled from the cohort's slides). Rank 0 saves the encoder
checkpoint (the pipeline's format, loadable by ``load_tile_encoder``) and a JSON report with the
per-epoch loss and every rank's weight checksum. Without torchrun it trains in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from fusion.errors import FusionRxError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.training.ddp_train", description=__doc__.splitlines()[0])
    p.add_argument("--tiles", required=True, type=Path, help=".npy of uint8 RGB tiles [N,H,W,3]")
    p.add_argument("--out", required=True, type=Path, help="encoder checkpoint written by rank 0")
    p.add_argument("--report", type=Path, default=None, help="JSON report written by rank 0")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64, help="tiles per rank per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--no-augment", action="store_true", help="deterministic: no shuffle, flips or masking")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def load_tiles(path: Path) -> np.ndarray:
    """The tiles array, checked: uint8 [N,H,W,3]."""
    if not path.is_file():
        raise FusionRxError(f"{path}: tiles file does not exist")
    tiles = np.load(path, mmap_mode="r")
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise FusionRxError(f"{path}: expected uint8 tiles [N,H,W,3], found {tiles.dtype} {list(tiles.shape)}")
    return np.asarray(tiles)


def main(argv: list[str] | None = None) -> int:
    """Train (one rank of) the DDP run; rank 0 writes the checkpoint and report."""
    import torch
    import torch.distributed as dist

    from imaging.tile_encoder import save_tile_encoder
    from imaging.tile_encoder_ddp import fit_tile_encoder_ddp

    args = build_parser().parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        tiles = load_tiles(args.tiles)
        encoder, info, history = fit_tile_encoder_ddp(tiles, args.feature_dim, args.epochs, args.seed,
                                                      args.batch_size, args.lr, not args.no_augment, args.device,
                                                      args.optimizer)
    except FusionRxError as exc:
        print(f"ddp_train: error: {exc}", file=sys.stderr)
        return 2
    if info.rank == 0:
        save_tile_encoder(encoder, args.out)
        report = {"world_size": info.world_size, "backend": info.backend, "loss_history": history,
                  "rank_weight_sha256": info.checksums, "tiles": int(len(tiles)), "checkpoint": str(args.out)}
        if args.report:
            args.report.write_text(json.dumps(report, indent=1))
        print(f"[ddp_train] {info.world_size} rank(s) ({info.backend or 'single process'}): loss "
              f"{history[0]:.4f} -> {history[-1]:.4f}; checkpoint {args.out}")
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
