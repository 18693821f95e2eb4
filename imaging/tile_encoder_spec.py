"""The tile encoder's spec: which tile network a run config's ``tile_encoder:`` names and how to feed it.

Torch-free (a run whose slide features are current checks its spec without importing torch);
``imaging.pretrained_encoder.load_encoder`` turns a spec into a network.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion.errors import TileEncoderError

KINDS = ("builtin", "timm", "callable")
POOLINGS = ("avg", "cls", "mean", "cls+mean")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FIELDS = {
    "builtin": {"kind", "weights", "mpp"},
    "timm": {"kind", "model", "weights", "model_kwargs", "pooling", "tile_px", "mpp", "mean", "std"},
    "callable": {"kind", "entry", "weights", "model_kwargs", "tile_px", "mpp", "mean", "std"},
}
# create_model keywords that would fetch or load weights behind our back, or put a classifier on top
_RESERVED_KWARGS = {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "num_classes"}


def _positive(where: str, key: str, value: Any, kind: type) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)
    if not ok or (kind is int and int(value) != value):
        raise TileEncoderError(f"{where}.{key}: expected a positive {kind.__name__}, found {value!r}")
    return kind(value)


def _rgb_triple(where: str, key: str, value: Any, positive: bool) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or (positive and min(out) <= 0):
        need = "three positive numbers (R, G, B)" if positive else "three numbers (R, G, B)"
        raise TileEncoderError(f"{where}.{key}: expected {need}, found {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class TileEncoderSpec:
    """Which tile network to run and how to feed it; built from the run config by ``from_config``.

    kind 'builtin': today's self-supervised TileEncoder (weights: its checkpoint, tile_px from it).
    kind 'timm': ``timm.create_model(model, pretrained=False, num_classes=0, **model_kwargs)`` + weights file.
    kind 'callable': ``entry`` = "module:function" called as function(weights_path, **model_kwargs) and
    returning an nn.Module mapping float [N,3,tile_px,tile_px] (normalised) to [N,D].
    mpp is the resolution (um/px) the encoder was trained at; None for builtin (the run's target_mpp).
    """

    kind: str = "builtin"
    model: str | None = None
    entry: str | None = None
    weights: Path | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)  # a copy of the config's; not mutated
    pooling: str = "avg"
    tile_px: int = 224
    mpp: float | None = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def name(self) -> str:
        """'builtin', 'timm:<model>' or 'callable:<module:function>'."""
        return {"builtin": "builtin", "timm": f"timm:{self.model}", "callable": f"callable:{self.entry}"}[self.kind]

    @classmethod
    def from_config(cls, value: Any, where: str = "tile_encoder") -> TileEncoderSpec:
        """Spec from the config value: None or 'builtin', or a mapping with ``kind`` (TileEncoderError naming
        the field, what was expected and what was found)."""
        if value is None or value in ("builtin", "cohort"):
            # 'builtin': the shipped frozen weights (imaging/weights, checked against their manifest when
            # loaded); 'cohort': no weights, the same CNN is trained on the run's own tiles
            from imaging.frozen_encoders import TILE, WEIGHTS_DIR

            weights = WEIGHTS_DIR / TILE if value != "cohort" else None
            return cls(kind="builtin", weights=weights, tile_px=64, mpp=None, mean=(0.0, 0.0, 0.0),
                       std=(1.0, 1.0, 1.0))
        if not isinstance(value, Mapping):
            raise TileEncoderError(f"{where}: expected 'builtin', 'cohort' or a mapping with kind: "
                                   f"{' | '.join(KINDS)}, found {value!r}")
        kind = value.get("kind")
        if kind not in KINDS:
            raise TileEncoderError(f"{where}.kind: expected one of {list(KINDS)}, found {kind!r}")
        unknown = sorted(set(map(str, value)) - _FIELDS[kind])
        if unknown:
            raise TileEncoderError(f"{where}: unknown field(s) {unknown} for kind {kind!r}; "
                                   f"expected some of {sorted(_FIELDS[kind])}")
        weights = value.get("weights")
        if weights is not None and not (isinstance(weights, (str, os.PathLike)) and str(weights)):
            raise TileEncoderError(f"{where}.weights: expected a local file path, found {weights!r}")
        weights = Path(os.path.expanduser(str(weights))) if weights is not None else None
        mpp = value.get("mpp", None if kind == "builtin" else 0.5)
        mpp = None if mpp is None else _positive(where, "mpp", mpp, float)
        if kind == "builtin":
            return cls(kind="builtin", weights=weights, tile_px=64, mpp=mpp, mean=(0.0, 0.0, 0.0),
                       std=(1.0, 1.0, 1.0))
        if weights is None and kind == "timm":
            raise TileEncoderError(f"{where}.weights: expected the path of a local weights file (.safetensors, "
                                   f".pth, .bin) for kind 'timm'; nothing is downloaded")
        kwargs = value.get("model_kwargs") or {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise TileEncoderError(f"{where}.model_kwargs: expected a mapping of keyword -> value, found {kwargs!r}")
        reserved = sorted(_RESERVED_KWARGS & set(kwargs))
        if reserved:
            raise TileEncoderError(f"{where}.model_kwargs: {reserved} not allowed (weights come only from "
                                   f"{where}.weights; the classifier is always removed)")
        common = {"weights": weights, "model_kwargs": copy.deepcopy(dict(kwargs)), "mpp": mpp,
                  "tile_px": _positive(where, "tile_px", value.get("tile_px", 224), int),
                  "mean": _rgb_triple(where, "mean", value.get("mean", IMAGENET_MEAN), positive=False),
                  "std": _rgb_triple(where, "std", value.get("std", IMAGENET_STD), positive=True)}
        if kind == "timm":
            model = value.get("model")
            if not isinstance(model, str) or not model:
                raise TileEncoderError(f"{where}.model: expected a timm model name (e.g. 'vit_small_patch16_224'), "
                                       f"found {model!r}")
            pooling = value.get("pooling", "avg")
            if pooling not in POOLINGS:
                raise TileEncoderError(f"{where}.pooling: expected one of {list(POOLINGS)}, found {pooling!r}")
            return cls(kind="timm", model=model, pooling=pooling, **common)
        entry = value.get("entry")
        if not isinstance(entry, str) or entry.count(":") != 1 or not all(entry.split(":")):
            raise TileEncoderError(f"{where}.entry: expected 'package.module:function', found {entry!r}")
        return cls(kind="callable", entry=entry, pooling="avg", **common)
