"""Every FusionRx network on CUDA, with and without mixed precision, checked against the CPU.

For each network: the same weights and inputs run forward on the CPU (float32, the reference) and on
CUDA in float32 and under autocast (bfloat16 and float16); the largest deviation relative to the
reference's scale is checked against a tolerance, and a training step (forward + backward + Adam)
is timed on both devices. Prints one table and writes bench/results_gpu.json.

    python bench/gpu_check.py [--quick] [--out bench/results_gpu.json]

Without CUDA it says so and exits 0 (nothing to check); --cpu-only times the CPU side alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOL_FP32 = 1e-3   # max |cuda - cpu| / (max |cpu| + 1e-6), float32 (TF32 off)
TOL_AMP = 5e-2    # the same under bfloat16 / float16 autocast


@dataclass
class Case:
    """One network: a builder of (model, inputs) and how to call it and reduce its output to a tensor."""

    name: str
    build: Callable[[torch.Generator], tuple[torch.nn.Module, tuple]]
    call: Callable[[torch.nn.Module, tuple], torch.Tensor]
    batch: int
    amp_in_use: bool = True  # False: FusionRx runs this network in float32 on CUDA (AMP measured, not used)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _volume_encoder(g: torch.Generator, batch: int):
    from imaging.volume_encoder import VolumeAutoencoder

    torch.manual_seed(0)
    return VolumeAutoencoder(in_channels=1, embed_dim=16, size_vox=32), (torch.randn(batch, 1, 32, 32, 32, generator=g),)


def _tile_encoder(g: torch.Generator, batch: int):
    from imaging.tile_encoder import INPUT_SIZE, TileEncoder

    torch.manual_seed(0)
    return TileEncoder(feature_dim=32), (torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=g),)


def _mil(g: torch.Generator, batch: int):
    from imaging.mil import GatedAttentionMIL

    torch.manual_seed(0)
    x = torch.randn(batch, 512, 32, generator=g)
    mask = torch.rand(batch, 512, generator=g) > 0.2
    return GatedAttentionMIL(in_dim=32, embed_dim=32, dropout=0.0), (x, mask)


def _spot_gnn(g: torch.Generator, n_spots: int):
    from omics.encoders import SpotGraphEncoder

    torch.manual_seed(0)
    side = int(np.sqrt(n_spots))
    yy, xx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    idx = (yy * side + xx).ravel()
    right = idx[(xx < side - 1).ravel()]
    down = idx[(yy < side - 1).ravel()]
    src = np.concatenate([right, down, right + 1, down + side])
    dst = np.concatenate([right + 1, down + side, right, down])
    edge_index = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)
    return SpotGraphEncoder(in_dim=50, hidden=64, embed_dim=16), (torch.randn(side * side, 50, generator=g), edge_index)


def _fusion(name: str):
    def build(g: torch.Generator, batch: int):
        from fusion.strategies import build_strategy

        torch.manual_seed(0)
        n_mod = 1 if name == "single" else 5
        z = torch.randn(batch, n_mod, 16, generator=g)
        present = torch.rand(batch, n_mod, generator=g) > 0.3
        present[:, 0] = True
        model = build_strategy(name, n_modalities=n_mod, embed_dim=16, n_outputs=3)
        for m in model.modules():  # deterministic comparison: no dropout
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model, (z, present)
    return build


def _coattention(g: torch.Generator, batch: int, tiles: int = 256):
    """FusionModel with MCAT-style co-attention: a flat (genomic) modality's embedding attends over slide tiles."""
    from fusion.data import ModalityData, MultimodalDataset
    from fusion.model import FusionModel

    n_valid = torch.randint(tiles // 4, tiles + 1, (batch,), generator=g)
    bags = [torch.randn(int(k), 32, generator=g).numpy() for k in n_valid]
    flat = ModalityData("expr", torch.randn(batch, 64, generator=g), torch.ones(batch, dtype=torch.bool))
    ds = MultimodalDataset(patients=[f"P{i}" for i in range(batch)],
                           modalities={"expr": flat, "wsi": ModalityData.from_bags("wsi", bags)})
    torch.manual_seed(0)
    model = FusionModel.for_dataset(ds, ["expr", "wsi"], "coattention", 3, embed_dim=16, dropout=0.0,
                                    modality_dropout=0.0)
    b = ds.to_batch()
    return model, (b["expr"]["values"], b["expr"]["present"], b["wsi"]["values"], b["wsi"]["mask"],
                   b["wsi"]["present"])


def _call_coattention(m: torch.nn.Module, a: tuple) -> torch.Tensor:
    return m({"expr": {"values": a[0], "mask": None, "present": a[1]},
              "wsi": {"values": a[2], "mask": a[3], "present": a[4]}})


def _molecule_gnn(g: torch.Generator, batch: int):
    from torch_geometric.data import Batch

    from molecules.gnn import MoleculeGNN

    try:
        from molecules.graph import smiles_to_graphs  # RDKit featurisation of real drugs
        smiles = ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "Cc1ccc(cc1Nc1nccc(n1)c1cccnc1)NC(=O)c1ccc(cc1)CN1CCN(C)CC1",
                  "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1", "O=C(c1ccc(F)cc1)C1CCN(CCn2c(=O)[nH]c3ccccc3c2=O)CC1"]
        graphs = smiles_to_graphs([smiles[i % len(smiles)] for i in range(batch)])
    except ImportError:  # no RDKit on this machine: random molecule-sized graphs with the same feature sizes
        from torch_geometric.data import Data
        graphs = []
        for _i in range(batch):
            n = 24
            ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
            ei = torch.cat([ei, ei.flip(0)], 1)
            graphs.append(Data(x=torch.rand(n, 40, generator=g), edge_index=ei, edge_attr=torch.rand(ei.shape[1], 6, generator=g)))
    b = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    return MoleculeGNN(node_dim=b.x.shape[1], edge_dim=b.edge_attr.shape[1], hidden=64, layers=3), (b,)


def cases(quick: bool) -> list[Case]:
    """The networks checked; batch sizes shrink with --quick."""
    from fusion.strategies import FUSION_STRATEGIES as STRATEGIES

    k = 1 if quick else 4
    out = [
        Case("volume autoencoder (3D SE-CNN)", lambda g: _volume_encoder(g, 8 * k), lambda m, a: m(*a)[1], 8 * k),
        Case("tile encoder (CNN)", lambda g: _tile_encoder(g, 64 * k), lambda m, a: m(*a), 64 * k),
        Case("slide gated-attention MIL", lambda g: _mil(g, 8 * k), lambda m, a: m(*a), 8 * k),
        Case("spot-graph GNN (GCN)", lambda g: _spot_gnn(g, 1024 * k), lambda m, a: m(*a), 1024 * k),
        Case("molecule GNN (GINE)", lambda g: _molecule_gnn(g, 32 * k), lambda m, a: m(*a), 32 * k, amp_in_use=False),
    ]
    for name in sorted(n for n, c in STRATEGIES.items() if not getattr(c, "instance_level", False)):
        out.append(Case(f"fusion: {name}", (lambda g, f=_fusion(name): f(g, 256 * k)), lambda m, a: m(*a), 256 * k))
    out.append(Case("fusion: coattention (expr x 256 tiles)", lambda g: _coattention(g, 16 * k), _call_coattention,
                    16 * k))
    return out


def _to(args: tuple, device: torch.device) -> tuple:
    return tuple(a.to(device) if hasattr(a, "to") else a for a in args)


def _forward(case: Case, model: torch.nn.Module, args: tuple, device: torch.device, amp: torch.dtype | None) -> torch.Tensor:
    model = model.to(device).eval()
    with torch.no_grad():
        if amp is None:
            return case.call(model, _to(args, device)).float().cpu()
        with torch.autocast(device_type=device.type, dtype=amp):
            return case.call(model, _to(args, device)).float().cpu()


def _train_rate(case: Case, model: torch.nn.Module, args: tuple, device: torch.device, amp: torch.dtype | None,
                steps: int) -> float:
    """Samples per second of forward + backward + Adam steps (after 2 warm-up steps)."""
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    a = _to(args, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if amp is None:
            loss = case.call(model, a).float().pow(2).mean()
        else:
            with torch.autocast(device_type=device.type, dtype=amp):
                loss = case.call(model, a).float().pow(2).mean()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return case.batch * steps / (time.perf_counter() - t0)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / (ref.abs().max() + 1e-6))


def check(quick: bool, cpu_only: bool) -> list[dict]:
    """Run every case; one result row per network."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = torch.device("cuda")
    rows = []
    for case in cases(quick):
        model, args = case.build(_gen())
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ref = _forward(case, model, args, torch.device("cpu"), None)
        row: dict = {"network": case.name, "batch": case.batch, "amp_in_use": case.amp_in_use,
                     "cpu_train_samples_s": _train_rate(case, model, args, torch.device("cpu"), None, 2 if quick else 3)}
        if not cpu_only:
            for label, amp, tol in (("fp32", None, TOL_FP32), ("bf16", torch.bfloat16, TOL_AMP), ("fp16", torch.float16, TOL_AMP)):
                model.load_state_dict(state)
                err = _rel_err(_forward(case, model, args, cuda, amp), ref)
                row[f"{label}_rel_err"] = err
                row[f"{label}_ok"] = bool(np.isfinite(err) and err <= tol) or (label != "fp32" and not case.amp_in_use)
                model.load_state_dict(state)
                row[f"cuda_{label}_train_samples_s"] = _train_rate(case, model, args, cuda, amp, 10 if quick else 30)
            row["speedup_bf16_vs_cpu"] = row["cuda_bf16_train_samples_s"] / row["cpu_train_samples_s"]
        model.load_state_dict(state)
        rows.append(row)
        print(f"  checked {case.name}", flush=True)
    return rows


def _print(rows: list[dict], cpu_only: bool) -> None:
    if cpu_only:
        print(f"{'network':34s} {'batch':>6s} {'CPU samples/s':>14s}")
        for r in rows:
            print(f"{r['network']:34s} {r['batch']:6d} {r['cpu_train_samples_s']:14.1f}")
        return
    print(f"{'network':34s} {'batch':>6s} {'fp32 err':>9s} {'bf16 err':>9s} {'fp16 err':>9s} "
          f"{'CPU/s':>9s} {'fp32/s':>10s} {'bf16/s':>10s} {'fp16/s':>10s} {'bf16 vs CPU':>11s} ok")
    for r in rows:
        ok = r["fp32_ok"] and r["bf16_ok"] and r["fp16_ok"]
        print(f"{r['network']:34s} {r['batch']:6d} {r['fp32_rel_err']:9.1e} {r['bf16_rel_err']:9.1e} {r['fp16_rel_err']:9.1e} "
              f"{r['cpu_train_samples_s']:9.1f} {r['cuda_fp32_train_samples_s']:10.1f} {r['cuda_bf16_train_samples_s']:10.1f} "
              f"{r['cuda_fp16_train_samples_s']:10.1f} {r['speedup_bf16_vs_cpu']:10.1f}x {'yes' if ok else 'NO'}{'' if r['amp_in_use'] else ' (fp32 only: AMP not used)'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller batches and fewer timed steps")
    p.add_argument("--cpu-only", action="store_true", help="time the CPU side only (no CUDA needed)")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results_gpu.json"))
    args = p.parse_args(argv)
    if not args.cpu_only and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (use --cpu-only to time the CPU side)")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device_name = "cpu only" if args.cpu_only else torch.cuda.get_device_name(0)
    print(f"gpu_check on {device_name}; torch {torch.__version__}; tolerances fp32 {TOL_FP32}, amp {TOL_AMP} "
          f"(max abs deviation / max abs CPU output)")
    rows = check(args.quick, args.cpu_only)
    _print(rows, args.cpu_only)
    result = {"device": device_name, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "cpu_threads": torch.get_num_threads(), "tolerance_fp32": TOL_FP32, "tolerance_amp": TOL_AMP, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    failed = [r["network"] for r in rows if not args.cpu_only and not (r["fp32_ok"] and r["bf16_ok"] and r["fp16_ok"])]
    if failed:
        print(f"gpu_check: outside tolerance: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
