"""The shipped (frozen) builtin encoders: the tile CNN and the CT / PET volume encoders, trained once by
``python -m flows.training.frozen_encoders`` on a generated cohort and kept as small weight files in
``imaging/weights/`` with their SHA-256 in ``imaging/weights/MANIFEST.json``.

A run with ``tile_encoder: builtin`` and ``volume_encoder: builtin`` (the defaults) only encodes: nothing is
trained on the cohort, so a patient's features do not depend on which other patients are in the run, a rerun
after one new patient re-encodes only that patient, and a damaged file of one patient changes nobody else's
features. ``cohort`` trains the same networks on the run's own cohort instead (the former behaviour).
A weights file whose SHA-256 differs from the manifest's is refused, the file named.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fusion.errors import FusionRxError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"
TILE = "builtin_tile_encoder.pt"
VOLUME = {"ct": "builtin_volume_ct.pt", "pet": "builtin_volume_pet.pt"}
VOLUME_FORMAT = "fusionrx-volume-encoder-v1"
ENCODER_CHOICES = ("builtin", "cohort")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest() -> dict[str, Any]:
    """The weights manifest: {"files": {name: {"sha256", ...}}, "training": {...}}."""
    if not MANIFEST.is_file():
        raise FusionRxError(f"{MANIFEST}: the frozen encoders' manifest is missing; reinstall FusionRx or run "
                            f"`python -m flows.training.frozen_encoders` (or set the encoder to 'cohort')")
    return json.loads(MANIFEST.read_text())


def weights_path(name: str) -> tuple[Path, str]:
    """Path and SHA-256 of a shipped weights file, checked against the manifest (FusionRxError naming the
    file when it is missing or altered)."""
    path = WEIGHTS_DIR / name
    expected = manifest()["files"].get(name, {}).get("sha256")
    if not path.is_file() or expected is None:
        raise FusionRxError(f"{path}: shipped encoder weights missing (or not in {MANIFEST.name})")
    found = file_sha256(path)
    if found != expected:
        raise FusionRxError(f"{path}: SHA-256 {found[:12]}... differs from the manifest's {expected[:12]}...; "
                            f"the shipped weights were altered")
    return path, found


def weights_sha256(name: str) -> str:
    """The manifest's SHA-256 of a shipped weights file (what feature files and stage keys record)."""
    return manifest()["files"][name]["sha256"]


def check_choice(field: str, value: Any) -> str:
    """A config encoder choice: 'builtin' (shipped, frozen) or 'cohort' (trained on the run's cohort)."""
    if value not in ENCODER_CHOICES:
        raise FusionRxError(f"{field}: expected one of {list(ENCODER_CHOICES)}, found {value!r}")
    return str(value)


def save_volume_encoder(encoder: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write a SECNN3d's shape and weights (with its input mean / std buffers) to ``path`` (temp, rename)."""
    import torch  # here, not at the top: the constants and hashes above are read by runs that never load torch

    path = Path(path)
    ckpt = {"format": VOLUME_FORMAT, "in_channels": encoder.in_channels, "embed_dim": encoder.embed_dim,
            "widths": list(encoder.widths), "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_volume_encoder(path: str | os.PathLike, embed_dim: int | None = None) -> torch.nn.Module:
    """A SECNN3d from a checkpoint of ``save_volume_encoder`` in eval mode (FusionRxError naming the file when
    it is not one, or when its embedding size is not ``embed_dim``)."""
    from imaging.checkpoints import read_checkpoint
    from imaging.volume_encoder import SECNN3d

    path = Path(path)
    ckpt = read_checkpoint(path, VOLUME_FORMAT, "volume-encoder")
    if embed_dim is not None and int(ckpt["embed_dim"]) != int(embed_dim):
        raise FusionRxError(f"{path}: embed_dim={ckpt['embed_dim']} in the checkpoint, the run asks for "
                            f"volume_embed_dim={embed_dim} (use volume_encoder: cohort for another size)")
    enc = SECNN3d(int(ckpt["in_channels"]), int(ckpt["embed_dim"]), tuple(ckpt["widths"]))
    enc.load_state_dict(ckpt["state_dict"])
    return enc.eval()


def builtin_volume_encoder(kind: str, cfg: dict[str, Any]) -> torch.nn.Module:
    """The shipped CT or PET volume encoder, checked against the run's patch geometry and embedding size."""
    train = manifest()["training"]
    for key in ("volume_patch_vox", "volume_patch_spacing_mm"):
        if float(train[key]) != float(cfg[key]):
            raise FusionRxError(f"{WEIGHTS_DIR / VOLUME[kind]}: trained on {key}={train[key]}, the run asks for "
                                f"{cfg[key]} (use volume_encoder: cohort for another patch geometry)")
    return load_volume_encoder(weights_path(VOLUME[kind])[0], cfg["volume_embed_dim"])
