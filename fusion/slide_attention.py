"""The slide attention model behind a patient report's heatmap: an attention MIL for the diagnosis, trained on
whole bags of slide-centred tile features, whose attention is measured faithful (docs/explanations.md).

Why a model of its own: the fused diagnosis model's slide attention is barely trained (another modality fits
the label first) and a MIL trained on the raw tile features can read the class from the stroma. The pipeline
normalises each slide's stain with that slide's own maximum concentrations, so a dense tumour rescales every
tile of its slide, and the stroma (~80% of the tiles) carries the label too, inverted; the MIL then predicts
well while attending away from the tumour (bench/explain_faithfulness.py, seeds 0 and 1). Here each slide's
tile features are first centred on the slide's median tile (``centre_bag``): the stain rescaling moves every
tile together and the median tile is stroma, so what is left is how a tile differs from its own slide's
background, and the only way to the label goes through the tiles that differ, the tumour.

The model is a small ensemble (``SlideAttentionConfig.members``, 3 by default; member k trained with seed
``seed + k``): its class probabilities are the members' mean, and so is its attention (each member's sums to
1 per slide). Measured on five generated cohorts (docs/explanations.md), the ensemble's map is steadier than
one MIL's (attention AUC 0.90-0.98 against 0.83-0.98) and random ensembles stay near chance.

The model never sees where the tumour is: it is fitted on bags and diagnosis labels only. Bags are
``[T, d]`` float arrays per slide (``flows.stages.pathology.slide_bag``: tile CNN features plus the tile's
hematoxylin density); reading feature files is the caller's. The MIL encoder comes from the caller as
``functools.partial(SomeMILClass, **json_options)`` (``fusion`` imports no modality package; e.g.
``partial(imaging.mil.GatedAttentionMIL, embed_dim=16, attn_dim=16)``) and is rebuilt by name on load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionConfigError, FusionDataError
from fusion.deploy_neural import factory, factory_spec
from fusion.explain import bag_attention
from fusion.heads import outputs_to_predictions
from fusion.model import FusionModel
from fusion.train import TrainConfig, cpu_threads, fit

FORMAT = 1  # slide_mil.pt "format": bump when the file's layout changes
MODALITY = "wsi"


def centre_bag(bag: np.ndarray) -> np.ndarray:
    """A slide's tile features [T, d] minus the slide's median tile (per feature), float32 [T, d].

    FusionDataError when the bag is not a non-empty 2-D array."""
    bag = np.asarray(bag, dtype=np.float32)
    if bag.ndim != 2 or bag.shape[0] == 0:
        raise FusionDataError(f"centre_bag: expected a bag of tile features [T, d] with T >= 1, got {bag.shape}")
    return bag - np.median(bag, axis=0, keepdims=True)


@dataclass(frozen=True)
class SlideAttentionConfig:
    """Training settings (the defaults are the ones measured in docs/explanations.md): ``members`` MILs with
    seeds ``seed + k``, each AdamW for ``epochs`` full-batch passes over whole bags (no instance sampling:
    sampled bags break localisation, docs/explanations.md); embedding and head sizes."""

    members: int = 3
    epochs: int = 100
    lr: float = 3e-3
    weight_decay: float = 1e-2
    embed_dim: int = 16
    hidden: int = 16
    dropout: float = 0.1
    seed: int = 0
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.members < 1 or self.epochs < 1 or self.lr <= 0 or self.embed_dim < 1 or self.hidden < 1:
            raise FusionConfigError(f"SlideAttentionConfig: need members, epochs, embed_dim, hidden >= 1 and lr > 0; "
                                    f"got {self}")




def _member(in_dim: int, n_classes: int, arch: Mapping[str, Any], factory: partial) -> FusionModel:
    return FusionModel([MODALITY], {MODALITY: int(in_dim)}, "single", int(n_classes), embed_dim=int(arch["embed_dim"]),
                       encoder_factories={MODALITY: factory}, modality_dropout=0.0, bag_modalities=[MODALITY],
                       task="multiclass", hidden=int(arch["hidden"]), dropout=float(arch["dropout"]))


class SlideAttentionModel:
    """A fitted slide attention model: ``members`` (FusionModels over ``wsi``, eval mode, CPU), the
    standardisation of slide-centred tile features (``mean``, ``std`` [d], over the training tiles), the
    ``classes`` (output order) and ``info`` (what it is and how it was fitted: config, architecture,
    n_train, class counts, training accuracy, fitted_utc, weights_sha256, version)."""

    def __init__(self, members: Sequence[FusionModel], mean: np.ndarray, std: np.ndarray, classes: Sequence[str],
                 info: Mapping[str, Any]):
        if not members:
            raise FusionConfigError("SlideAttentionModel: no member model")
        self.members = list(members)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        self.classes = [str(c) for c in classes]
        self.info = dict(info)
        for m in self.members:
            m.cpu().eval()

    @property
    def in_dim(self) -> int:
        """Tile feature dimension d the model takes."""
        return int(self.mean.size)

    @property
    def version(self) -> str:
        """``slide_mil-<fitted UTC>-<weights SHA-256[:8]>``."""
        return str(self.info.get("version", ""))

    def prepare(self, bag: np.ndarray) -> np.ndarray:
        """The model's input for one slide: centred on the slide's median tile, then standardised [T, d]."""
        bag = np.asarray(bag, dtype=np.float32)
        if bag.ndim != 2 or bag.shape[1] != self.in_dim:
            raise FusionDataError(f"slide attention model {self.version}: expected a bag [T, {self.in_dim}] "
                                  f"(tile features + hematoxylin density), got {bag.shape}")
        return (centre_bag(bag) - self.mean) / self.std

    def dataset(self, bags: Sequence[np.ndarray], patients: Sequence[str] | None = None,
                y: np.ndarray | None = None) -> MultimodalDataset:
        """A slide-only dataset of prepared bags (what the members see), e.g. for fusion.faithfulness."""
        patients = [f"slide{i}" for i in range(len(bags))] if patients is None else [str(p) for p in patients]
        prepared = ModalityData.from_bags(MODALITY, [self.prepare(b) for b in bags])
        return MultimodalDataset(patients, {MODALITY: prepared}, y=y)

    @torch.no_grad()
    def attention(self, bag: np.ndarray) -> np.ndarray:
        """Per-tile attention [T] (float64, sums to 1) in the bag's tile order: the members' mean."""
        ds = self.dataset([bag])
        with cpu_threads(self.info.get("config", {}).get("num_threads")):
            return np.mean([bag_attention(m, ds, 0, MODALITY) for m in self.members], axis=0)

    @torch.no_grad()
    def probabilities(self, bag: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities [R, K] (members' mean) of one slide with the tiles of each row of ``keep``
        (bool [R, T]; default one row, every tile). Tiles are centred on the whole slide first, so dropping
        a tile removes it from the attention pooling and changes nothing else."""
        x = torch.as_tensor(self.prepare(bag))
        t = x.shape[0]
        keep = np.ones((1, t), bool) if keep is None else np.asarray(keep, bool)
        if keep.ndim != 2 or keep.shape[1] != t:
            raise FusionDataError(f"probabilities: keep must be bool [R, {t}], got {keep.shape}")
        mask = torch.as_tensor(keep)
        batch = {MODALITY: {"values": x.expand(mask.shape[0], t, x.shape[1]), "mask": mask,
                            "present": torch.ones(mask.shape[0], dtype=torch.bool)}}
        with cpu_threads(self.info.get("config", {}).get("num_threads")):
            probs = [outputs_to_predictions("multiclass", m(batch)).double() for m in self.members]
        return torch.stack(probs).mean(dim=0).numpy()

    def reinitialised(self, seed: int) -> "SlideAttentionModel":
        """The same architecture and preprocessing with every member's layers re-initialised at random (member k
        under a torch seed drawn from ``SeedSequence([seed, k])``, so the members of two baselines never share
        an initialisation; the caller's RNG is restored): the model-randomisation baseline."""
        from fusion.faithfulness import reinitialised  # that module measures this one: imported here, no cycle

        twins = [reinitialised(m, int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0]))
                 for k, m in enumerate(self.members)]
        return SlideAttentionModel(twins, self.mean, self.std, self.classes,
                                   {**self.info, "version": f"{self.version}-random{seed}"})


def _weights_sha256(members: Sequence[FusionModel]) -> str:
    h = hashlib.sha256()
    for k, m in enumerate(members):
        for name, v in sorted(m.state_dict().items()):
            h.update(f"{k}.{name}".encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_slide_attention(bags: Mapping[str, np.ndarray], labels: Mapping[str, int], classes: Sequence[str],
                        mil_factory: partial, config: SlideAttentionConfig | None = None) -> SlideAttentionModel:
    """Fit the slide attention model on the patients having both a bag ([T, d], raw tile features as
    ``slide_bag`` gives them) and a label (class id into ``classes``).

    Raises FusionDataError when fewer than two such patients or classes remain, a label is outside
    ``classes`` or the bags differ in d; FusionConfigError when ``mil_factory`` is not a
    ``partial(Class, **json_options)`` (the model is rebuilt by name on load).
    """
    config = config or SlideAttentionConfig()
    spec = factory_spec(mil_factory, "slide attention mil_factory")
    patients = sorted(p for p in bags if p in labels and bags[p] is not None and np.asarray(bags[p]).shape[0] > 0)
    y = np.array([int(labels[p]) for p in patients], dtype=np.int64)
    if len(patients) < 2 or len(set(y.tolist())) < 2:
        raise FusionDataError(f"fit_slide_attention: need >= 2 labelled slides of >= 2 classes, found {len(patients)} "
                              f"slides, classes {sorted(set(y.tolist()))}")
    if y.min() < 0 or y.max() >= len(classes):
        raise FusionDataError(f"fit_slide_attention: labels {sorted(set(y.tolist()))} outside classes {list(classes)}")
    dims = {np.asarray(bags[p]).shape[1] for p in patients}
    if len(dims) != 1:
        raise FusionDataError(f"fit_slide_attention: bags have different feature dimensions {sorted(dims)}")
    centred = [centre_bag(bags[p]) for p in patients]
    tiles = np.concatenate(centred)
    mean, std = tiles.mean(axis=0), tiles.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    arch = {"in_dim": int(dims.pop()), "n_classes": len(classes), "embed_dim": config.embed_dim,
            "hidden": config.hidden, "dropout": config.dropout, "mil": spec}
    ds = MultimodalDataset(patients, {MODALITY: ModalityData.from_bags(MODALITY, [(c - mean) / std for c in centred])},
                           y=y)
    members = []
    for k in range(config.members):
        seed = config.seed + k
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            member = _member(arch["in_dim"], len(classes), arch, mil_factory)
        members.append(fit(member, ds, np.arange(len(patients)),
                           TrainConfig(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, seed=seed,
                                       num_threads=config.num_threads, device="cpu")))
    t0 = datetime.now(timezone.utc)
    sha = _weights_sha256(members)
    info = {"format": FORMAT, "config": asdict(config), "architecture": arch, "n_train": len(patients),
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)},
            "fitted_utc": t0.isoformat(timespec="seconds"), "weights_sha256": sha,
            "version": f"slide_mil-{t0:%Y%m%dT%H%M%S}-{sha[:8]}"}
    fitted = SlideAttentionModel(members, mean, std, classes, info)
    pred = np.array([int(np.argmax(fitted.probabilities(bags[p])[0])) for p in patients])
    fitted.info["train_accuracy"] = float(np.mean(pred == y))
    return fitted


def save_slide_attention(model: SlideAttentionModel, path: str | os.PathLike) -> Path:
    """Write the model to ``path`` (one torch file of tensors, lists and strings) atomically: a temp file
    beside it, renamed once complete. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "classes": list(model.classes), "info": model.info,
            "mean": torch.as_tensor(model.mean), "std": torch.as_tensor(model.std),
            "state_dicts": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in model.members]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_slide_attention(path: str | os.PathLike) -> SlideAttentionModel:
    """The model saved at ``path`` (eval mode, CPU). FusionDataError naming the file and the key when it is not
    a slide attention model of this format."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FusionDataError(f"{path}: no slide attention model (run `fusionrx run` to train one)") from None
    except Exception as exc:  # a torn or foreign file
        raise FusionDataError(f"{path}: not a readable slide attention model: {exc}") from exc
    for key in ("format", "classes", "info", "mean", "std", "state_dicts"):
        if not isinstance(blob, dict) or key not in blob:
            raise FusionDataError(f"{path}: slide attention model lacks key '{key}'")
    if blob["format"] != FORMAT:
        raise FusionDataError(f"{path}: key 'format': expected {FORMAT}, found {blob['format']}")
    arch = blob["info"]["architecture"]
    members = []
    for state in blob["state_dicts"]:
        member = _member(arch["in_dim"], arch["n_classes"], arch, factory(arch["mil"]))
        member.load_state_dict(state)
        members.append(member)
    return SlideAttentionModel(members, blob["mean"].numpy(), blob["std"].numpy(), blob["classes"], blob["info"])


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> SlideAttentionModel:
    return load_slide_attention(path)


def tile_attention(model_path: str | os.PathLike, bag: np.ndarray) -> np.ndarray:
    """Per-tile attention [T] (sums to 1, the bag's tile order) of the slide attention model saved at
    ``model_path`` for one slide's bag [T, d] (``flows.stages.pathology.slide_bag(features_h5)``). The loaded
    model is kept while the file is unchanged (a report for every patient loads it once)."""
    st = Path(model_path).stat() if Path(model_path).exists() else None
    if st is None:
        raise FusionDataError(f"{model_path}: no slide attention model (run `fusionrx run` to train one)")
    return _cached(str(Path(model_path).resolve()), st.st_mtime_ns, st.st_size).attention(bag)
