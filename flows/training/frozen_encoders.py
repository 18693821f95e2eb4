"""Train the shipped builtin encoders once: ``python -m flows.training.frozen_encoders [--patients N]``.

Generates a cohort (its own seed, not the demo's), then trains the same self-supervised networks a
``cohort`` run trains, with the run config's defaults: the tile CNN (masked denoising autoencoder) on
stain-normalised tiles of every slide, and the CT and PET SE-CNN volume autoencoders on the ROI-centred
patches. Writes ``imaging/weights/*.pt`` and ``MANIFEST.json`` (SHA-256 of each file, the training settings
and the cohort). Deterministic for a seed on one machine (CPU, one thread).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from imaging.frozen_encoders import MANIFEST, TILE, VOLUME, WEIGHTS_DIR, file_sha256, save_volume_encoder


def _cohort(root: Path, patients: int, seed: int):
    from flows.catalog.schema import load_catalog
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    generate_cohort(root, CohortConfig(n_patients=patients, seed=seed), progress=lambda msg: None)
    return load_catalog(root / "data_catalog.yaml")


def train_tile(catalog, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """The tile CNN on ``encoder_tiles_per_slide`` tiles of every slide of ``catalog``."""
    from flows.stages.pathology import discover_slides, plan_slide, sample_cohort_tiles
    from imaging.tile_encoder import fit_tile_encoder, save_tile_encoder

    src = catalog.by_modality("wsi")
    slides = src.items() or discover_slides(src.path, src.pattern, src.id_map)
    plans = [plan_slide(pid, p, cfg["tile_size"], cfg["target_mpp"], cfg["min_tissue"], cfg["seed"])
             for pid, p in sorted(slides.items())]
    tiles = sample_cohort_tiles(plans, cfg["encoder_tiles_per_slide"], cfg["seed"])
    enc = fit_tile_encoder(tiles, feature_dim=cfg["tile_feature_dim"], epochs=cfg["tile_encoder_epochs"],
                           seed=cfg["seed"])
    save_tile_encoder(enc, out / TILE)
    return {"slides": len(plans), "tiles": int(len(tiles)), "final_loss": enc.loss_history[-1]}


def train_volumes(catalog, cfg: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """The CT and PET volume autoencoders on the ROI-centred patches of every patient of ``catalog``."""
    import numpy as np

    from flows.stages.radiology import discover_radiology, ingest_radiology, load_patches
    from imaging.volume_encoder import fit_volume_autoencoder

    cts, pets, _, segs = discover_radiology(catalog.by_modality("ct"), catalog.by_modality("pet"))
    results = [vars(ingest_radiology(pid, d, pets.get(pid), work / pid, cfg["volume_patch_vox"],
                                     cfg["volume_patch_spacing_mm"], segs.get(pid, [])))
               for pid, d in sorted(cts.items())]
    _, ct, suv = load_patches(results)
    has_pet = np.array([r.get("suv_npz") is not None for r in results])
    common = {"embed_dim": cfg["volume_embed_dim"], "epochs": cfg["volume_encoder_epochs"]}
    save_volume_encoder(fit_volume_autoencoder(ct, seed=cfg["seed"], **common), out / VOLUME["ct"])
    save_volume_encoder(fit_volume_autoencoder(suv[has_pet], seed=cfg["seed"] + 1, **common), out / VOLUME["pet"])
    return {"ct_patients": len(results), "pet_patients": int(has_pet.sum())}


def train(patients: int = 80, seed: int = 2026, out: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """Generate a cohort, train the three encoders into ``out`` and write the manifest; returns it."""
    from flows.config import RunConfig

    torch.set_num_threads(1)
    cfg = RunConfig().to_dict()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fusionrx-frozen-") as tmp:
        catalog = _cohort(Path(tmp) / "cohort", patients, seed)
        tile = train_tile(catalog, cfg, out)
        vol = train_volumes(catalog, cfg, out, Path(tmp) / "radiology")
    keys = ("tile_size", "target_mpp", "min_tissue", "encoder_tiles_per_slide", "tile_feature_dim",
            "tile_encoder_epochs", "volume_patch_vox", "volume_patch_spacing_mm", "volume_embed_dim",
            "volume_encoder_epochs", "seed")
    record = {"files": {name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size}
                        for name in (TILE, *VOLUME.values())},
              "training": {**{k: cfg[k] for k in keys}, "cohort": {"generator": "flows.synthetic.cohort",
                                                                   "patients": patients, "seed": seed},
                           "tile": tile, "volume": vol, "torch": torch.__version__,
                           "seconds": round(time.perf_counter() - t0, 1),
                           "command": f"python -m flows.training.frozen_encoders --patients {patients} "
                                      f"--seed {seed}"}}
    tmp_manifest = (out / MANIFEST.name).with_suffix(".json.tmp")
    tmp_manifest.write_text(json.dumps(record, indent=2) + "\n")
    tmp_manifest.replace(out / MANIFEST.name)
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=80)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    print(json.dumps(train(args.patients, args.seed, args.out), indent=2))


if __name__ == "__main__":
    main()
