"""Pretrained slide tile encoders (timm CNNs / ViTs, or a user's function) beside the built-in tile CNN,
and CLAM-style tile-feature files.

A run config's ``tile_encoder:`` value becomes a frozen ``TileEncoderSpec``; ``load_encoder`` turns it into a
``TileEmbedder`` that maps RGB uint8 tiles [N,H,W,3] to float32 features [N,D] and records which network
and which weights file (SHA-256) made them. Weights come only from the local file named in the spec:
timm models are built with ``pretrained=False`` and no hub is ever asked.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.machinery
import math
import os
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion.device import resolve_device
from fusion.errors import FeatureFileError, TileEncoderError
from imaging.frozen_encoders import file_sha256

from imaging.tile_encoder_spec import (IMAGENET_MEAN, IMAGENET_STD, KINDS, POOLINGS,  # noqa: F401 (re-exported)
                                      TileEncoderSpec)

_STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a weights file; of a folder (e.g. a Hugging Face snapshot), the digest of its
    files' relative paths and digests in sorted order."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + weights_sha256(p).encode() + b"\n")
        return h.hexdigest()
    return file_sha256(path)


class TileEmbedder:
    """A frozen tile network with its preprocessing: RGB uint8 tiles [N,H,W,3] -> float32 features [N,D].

    Tiles are resized to tile_px (area for builtin, antialiased bilinear otherwise), scaled to [0,1] and
    normalised by mean/std; ``forward`` maps that batch [B,3,tile_px,tile_px] to pooled features [B,D].
    """

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], name: str,
                 weights_sha256: str | None, tile_px: int, mpp: float | None, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, pooling: str = "avg", device: str | torch.device = "cpu",
                 resize_mode: str = "bilinear", batch_size: int = 32, ignored_keys: tuple[str, ...] = ()):
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self._forward = forward
        self.name, self.weights_sha256, self.pooling = name, weights_sha256, pooling
        self.tile_px, self.mpp, self.batch_size, self.resize_mode = int(tile_px), mpp, int(batch_size), resize_mode
        self.ignored_keys = tuple(ignored_keys)  # checkpoint keys dropped on purpose (classifier, truncated stages)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        try:
            probe = self._run(torch.zeros(2, 3, self.tile_px, self.tile_px, device=self.device))
        except TileEncoderError:
            raise
        except Exception as exc:
            raise TileEncoderError(f"{name}: a probe batch [2,3,{tile_px},{tile_px}] fails ({exc})") from exc
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise TileEncoderError(f"{name}: expected features [N,D] from the network, found {tuple(probe.shape)}")
        self.feature_dim = int(probe.shape[1])

    @classmethod
    def from_builtin(cls, encoder: nn.Module, weights_sha256: str | None = None, mpp: float | None = None,
                     device: str | torch.device = "cpu") -> TileEmbedder:
        """Wrap an in-memory imaging.tile_encoder.TileEncoder (e.g. one just trained on the cohort)."""
        return cls(encoder, encoder, "builtin", weights_sha256, encoder.input_size, mpp, (0.0, 0.0, 0.0),
                   (1.0, 1.0, 1.0), pooling="avg", device=device, resize_mode="area", batch_size=256)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward((x - self._mean) / self._std).float()

    def prepare(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        """RGB uint8 tiles [B,H,W,3] -> float [B,3,tile_px,tile_px] in [0,1] on the embedder's device."""
        x = torch.as_tensor(tiles if isinstance(tiles, torch.Tensor) else np.asarray(tiles))
        if x.ndim != 4 or x.shape[-1] != 3:
            raise TileEncoderError(f"{self.name}: expected RGB tiles [N,H,W,3], found {tuple(x.shape)}")
        x = x.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.tile_px, self.tile_px):
            size = (self.tile_px, self.tile_px)
            x = (F.interpolate(x, size=size, mode="area") if self.resize_mode == "area"
                 else F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False))
        return x

    def embed(self, tiles: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """Features float32 [N, feature_dim] of RGB uint8 tiles [N,H,W,3] (eval mode, no gradients, batched)."""
        bs = int(batch_size or self.batch_size)
        out = [self._run(self.prepare(tiles[s : s + bs])).cpu() for s in range(0, len(tiles), bs)]
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    encode = embed  # the name TileEncoder uses, so either object drops into the slide-feature stage

    def h5_meta(self) -> dict[str, Any]:
        """The encoder's identity for a feature file's attributes (see write_clam_h5)."""
        return {"encoder": self.name, "weights_sha256": self.weights_sha256 or "", "tile_px": self.tile_px,
                "mpp": self.mpp, "feature_dim": self.feature_dim, "pooling": self.pooling}


# ---- timm without torchvision -------------------------------------------------------------------------
class _FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (torchvision.ops.misc.FrozenBatchNorm2d)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.view(1, -1, 1, 1) * (self.running_var.view(1, -1, 1, 1) + self.eps).rsqrt()
        return x * scale + (self.bias.view(1, -1, 1, 1) - self.running_mean.view(1, -1, 1, 1) * scale)


class _Unavailable(type):
    """A torchvision name that timm's data code refers to at import time; FusionRx never calls it."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _unavailable(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise ImportError(f"torchvision.{cls.__qualname__}: torchvision is not importable beside this torch; "
                          f"FusionRx runs timm models through a stand-in without it")


def _unavailable(qualname: str) -> type:
    return _Unavailable(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname, "__module__": "torchvision"})


def _placeholders(prefix: str) -> Callable[[str], type]:
    """A module __getattr__ handing out one placeholder class per public name."""
    seen: dict[str, type] = {}

    def __getattr__(attr: str) -> type:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return seen.setdefault(attr, _unavailable(f"{prefix}.{attr}"))

    return __getattr__


def _install_torchvision_stub() -> None:
    """Register stand-in torchvision modules: the real FrozenBatchNorm2d (all timm's model code uses), and
    placeholders for the datasets / transforms names timm.data binds at import; any other torchvision
    module stays unimportable, so timm's own 'is torchvision there' probes still answer no."""
    for name in [m for m in sys.modules if m in ("torchvision", "timm") or m.startswith(("torchvision.", "timm."))]:
        del sys.modules[name]  # a half-imported broken torchvision, or timm modules that failed on it
    mods = {}
    for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
                 "torchvision.transforms", "torchvision.transforms.functional"):
        mod = types.ModuleType(name, "FusionRx stand-in for timm (torchvision does not import beside this torch)")
        leaf = name in ("torchvision.ops.misc", "torchvision.datasets", "torchvision.transforms.functional")
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=not leaf)
        if not leaf:
            mod.__path__ = []  # type: ignore[attr-defined]
        if name in ("torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional"):
            mod.__getattr__ = _placeholders(name.split(".", 1)[1])  # type: ignore[attr-defined]
        mod.__fusionrx_stub__ = True  # type: ignore[attr-defined]
        mods[name] = mod
    mods["torchvision.ops.misc"].FrozenBatchNorm2d = _FrozenBatchNorm2d  # type: ignore[attr-defined]
    for name, mod in mods.items():
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(mods[parent], child, mod)
    mods["torchvision"].__version__ = "0+fusionrx.stub"  # type: ignore[attr-defined]
    sys.modules.update(mods)


def _import_timm():
    """The timm module; with a missing or broken torchvision, through _install_torchvision_stub."""
    try:
        import timm
        return timm
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("torchvision"):
            raise TileEncoderError(f"kind 'timm' needs the timm package ({exc}); pip install --no-deps timm "
                                   f"safetensors (timm's torchvision requirement would replace torch)") from exc
    except Exception as exc:  # a torchvision built for another torch fails while registering its operators
        tb = exc.__traceback__
        while tb is not None and "torchvision" not in tb.tb_frame.f_code.co_filename:
            tb = tb.tb_next
        if tb is None:
            raise
    _install_torchvision_stub()
    import timm
    return timm


# ---- weights ------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a torch state dict (.pth/.pt/.bin, possibly wrapped
    as {'state_dict': ...} or {'model': ...}); TileEncoderError naming the file when it is absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise TileEncoderError(f"{path}: weights file does not exist (only local files are used; nothing is "
                               f"downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TileEncoderError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict", "teacher"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping) and not torch.is_tensor(sd.get(key)):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise TileEncoderError(f"{path}: expected a state dict of tensors, found {type(sd).__name__}")
    return dict(sd)


def load_weights(model: nn.Module, path: str | os.PathLike,
                 droppable: Callable[[str], bool] = lambda key: False) -> tuple[str, ...]:
    """Load a weights file into model strictly, after stripping prefixes every key shares ('module.', 'model.',
    ...) that the model's own keys lack. Unexpected keys for which ``droppable(key)`` holds (the removed
    classifier, truncated stages) are dropped and returned; any other missing, unexpected or mis-shaped key
    is a TileEncoderError naming the file and the keys."""
    sd = read_state_dict(path)
    own = model.state_dict()
    stripped = True
    while stripped:
        stripped = False
        for p in _STRIP_PREFIXES:
            if all(k.startswith(p) for k in sd) and not any(k.startswith(p) for k in own):
                sd, stripped = {k[len(p):]: v for k, v in sd.items()}, True
    dropped = tuple(sorted(k for k in sd if k not in own and droppable(k)))
    sd = {k: v for k, v in sd.items() if k not in dropped}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in set(sd) & set(own)
                    if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return f"{len(keys)} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
        raise TileEncoderError(f"{path}: weights do not fit the model: missing {few(missing)}, unexpected "
                               f"{few(unexpected)}, shape mismatches (file vs model) {few(shapes)}")
    model.load_state_dict(sd, strict=True)
    return dropped


# ---- builders, one per kind ----------------------------------------------------------------------------
def _pool_timm(model: nn.Module, pooling: str, feature_net: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """forward for a timm model: its own pooled output ('avg'), or cls / mean / cls+mean of forward_features
    tokens (mean over patch tokens, after num_prefix_tokens), or the mean of a feature map [B,C,H,W]."""
    npt = int(getattr(model, "num_prefix_tokens", 0))
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x) if pooling == "avg" or feature_net else model.forward_features(x)
        if isinstance(out, (list, tuple)):  # features_only: the deepest requested map
            out = out[-1]
        if out.ndim == 4:
            if pooling in ("cls", "cls+mean"):
                raise TileEncoderError(f"pooling {pooling!r}: the model gives a feature map "
                                       f"{tuple(out.shape)}, not tokens; expected 'mean' or 'avg'")
            return out.mean(dim=(1, 2) if nhwc else (2, 3))
        if out.ndim == 3 and pooling != "avg":
            if pooling in ("cls", "cls+mean") and (npt == 0 or getattr(model, "cls_token", None) is None):
                raise TileEncoderError(f"pooling {pooling!r}: the model has no class token "
                                       f"(num_prefix_tokens={npt}); expected 'mean' or 'avg'")
            cls, mean = out[:, 0], out[:, npt:].mean(dim=1)
            return {"cls": cls, "mean": mean, "cls+mean": torch.cat([cls, mean], dim=1)}[pooling]
        return out

    return forward


def _build_timm(spec: TileEncoderSpec, device: str | torch.device) -> TileEmbedder:
    timm = _import_timm()
    kwargs = spec.model_kwargs
    try:
        model = timm.create_model(spec.model, pretrained=False, num_classes=0, **kwargs)
    except Exception as exc:
        raise TileEncoderError(f"tile_encoder.model: timm cannot build {spec.model!r} with model_kwargs {kwargs} "
                               f"({type(exc).__name__}: {exc})") from exc
    feature_net = bool(kwargs.get("features_only"))
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    children = {n for n, _ in model.named_children()}

    def droppable(key: str) -> bool:  # the classifier (num_classes=0), and stages a features_only net cut off
        return key.startswith(heads) or (feature_net and key.split(".")[0] not in children)

    dropped = load_weights(model, spec.weights, droppable)
    return TileEmbedder(model, _pool_timm(model, spec.pooling, feature_net), spec.name, weights_sha256(spec.weights),
                        spec.tile_px, spec.mpp, spec.mean, spec.std, spec.pooling, device, ignored_keys=dropped)


def _build_callable(spec: TileEncoderSpec, device: str | torch.device) -> TileEmbedder:
    module_name, func_name = spec.entry.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise TileEncoderError(f"tile_encoder.entry: cannot import {spec.entry!r} ({exc})") from exc
    if spec.weights is not None and not spec.weights.exists():
        raise TileEncoderError(f"{spec.weights}: weights file does not exist (only local files are used)")
    model = func(str(spec.weights) if spec.weights is not None else None, **spec.model_kwargs)
    if not isinstance(model, nn.Module):
        raise TileEncoderError(f"tile_encoder.entry: {spec.entry} returned {type(model).__name__}, expected an "
                               f"nn.Module mapping [N,3,H,W] to [N,D]")
    sha = weights_sha256(spec.weights) if spec.weights is not None else None
    return TileEmbedder(model, model, spec.name, sha, spec.tile_px, spec.mpp, spec.mean, spec.std, "model",
                        device)


def _build_builtin(spec: TileEncoderSpec, device: str | torch.device) -> TileEmbedder:
    from imaging.tile_encoder import load_tile_encoder

    if spec.weights is None or not spec.weights.is_file():
        raise TileEncoderError(f"tile_encoder.weights: the builtin encoder's checkpoint {spec.weights} does not "
                               f"exist; train it (imaging.tile_encoder.fit_tile_encoder) or wrap the trained "
                               f"network with TileEmbedder.from_builtin")
    from imaging.frozen_encoders import TILE, WEIGHTS_DIR, weights_path

    shipped = spec.weights.resolve() == (WEIGHTS_DIR / TILE).resolve()
    # the shipped weights: refused when their hash differs from the manifest's (hashed once, here)
    sha = weights_path(TILE)[1] if shipped else weights_sha256(spec.weights)
    encoder = load_tile_encoder(spec.weights)
    return TileEmbedder.from_builtin(encoder, sha, spec.mpp, device)


BUILDERS: dict[str, Callable[[TileEncoderSpec, str | torch.device], TileEmbedder]] = {
    "builtin": _build_builtin, "timm": _build_timm, "callable": _build_callable,
}


def load_encoder(spec: TileEncoderSpec, device: str | torch.device = "cpu") -> TileEmbedder:
    """The TileEmbedder of a spec, weights read only from spec.weights (TileEncoderError naming the file or
    field when it is absent, unreadable or does not fit the network)."""
    return BUILDERS[spec.kind](spec, device)


# ---- CLAM-style feature files --------------------------------------------------------------------------
REQUIRED_META = ("encoder", "weights_sha256", "tile_px", "mpp")


class ClamFeatures(NamedTuple):
    """A slide's tile features float32 [N,D], their level-0 top-left coords (x, y) int64 [N,2], and attrs."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]


def _attr_value(path: Path, key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).dtype.kind in "biuf":
        return np.asarray(value)
    raise FeatureFileError(f"{path}: meta[{key!r}]: expected a string, number or list of numbers, "
                           f"found {type(value).__name__}")


def write_clam_h5(path: str | os.PathLike, features: np.ndarray, coords: np.ndarray,
                  meta: Mapping[str, Any]) -> Path:
    """Write datasets ``features`` [N,D] float32 and ``coords`` [N,2] int64 (level-0 px) with meta as file
    attributes (must hold encoder, weights_sha256, tile_px, mpp; None is stored as ''), through a temp file
    renamed onto path; FeatureFileError naming the file and field on bad input."""
    path = Path(path)
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords)
    if features.ndim != 2 or coords.shape != (len(features), 2):
        raise FeatureFileError(f"{path}: expected features [N,D] and coords [N,2], found {features.shape} and "
                               f"{coords.shape}")
    if coords.dtype.kind not in "iu" and not np.array_equal(coords, np.round(coords)):
        raise FeatureFileError(f"{path}: coords: expected integer level-0 pixel coordinates, found {coords.dtype}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise FeatureFileError(f"{path}: meta lacks {missing}; expected keys {list(REQUIRED_META)}")
    if not isinstance(meta["mpp"], (int, float)) or isinstance(meta["mpp"], bool):
        raise FeatureFileError(f"{path}: meta['mpp']: expected um/px of the tiles (a number), found {meta['mpp']!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=features)
            f.create_dataset("coords", data=coords.astype(np.int64))
            for key, value in meta.items():
                f.attrs[str(key)] = _attr_value(path, str(key), value)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_clam_h5(path: str | os.PathLike) -> ClamFeatures:
    """Features, coords and attributes of a CLAM-style HDF5 (FeatureFileError naming the file and field)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("features", "coords") if k not in f]
            if missing:
                raise FeatureFileError(f"{path}: lacks dataset(s) {missing}; expected 'features' and 'coords'")
            features, coords = f["features"][()].astype(np.float32, copy=False), f["coords"][()]
            attrs = {k: (v.item() if isinstance(v, np.generic) else v.decode() if isinstance(v, bytes) else v)
                     for k, v in f.attrs.items()}
    except OSError as exc:
        raise FeatureFileError(f"{path}: cannot read tile-feature HDF5 ({exc})") from exc
    if features.ndim != 2 or coords.shape != (len(features), 2):
        raise FeatureFileError(f"{path}: features {features.shape} and coords {coords.shape} disagree")
    return ClamFeatures(features, coords.astype(np.int64, copy=False), attrs)
