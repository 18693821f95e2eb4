"""Multimodal samples: per-modality tensors keyed by modality name, with missing-modality masks.

A patient either has a modality (``present``) or not; absent rows hold zeros that
every model masks out, so a missing modality is never silently imputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch

from fusion.errors import FusionDataError

Labels = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]


def _as_index(indices: Sequence[int] | np.ndarray | torch.Tensor, n: int, what: str) -> torch.Tensor:
    """Row indices as an int64 tensor, checked against ``n`` rows."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise FusionDataError(f"{what}: indices must lie in [0, {n}), got range [{int(idx.min())}, {int(idx.max())}]")
    return idx


@dataclass
class ModalityData:
    """One modality for N patients: vector features [N, d], padded bags [N, T, d] with an instance mask, or
    ragged bags (a list of N tensors [T_i, d], e.g. tile features of slides of any size; absent: [0, d]).

    ``present`` (bool [N]) says which patients have the modality; ``instance_mask``
    (bool [N, T]) marks the valid instances of padded bags and is None for vectors and ragged bags,
    which are padded only inside a mini-batch (``MultimodalDataset.to_batch``), never to the cohort's
    largest bag. ``feature_names`` (length d, optional) names the feature columns (e.g. genes).
    """

    name: str
    values: torch.Tensor
    present: torch.Tensor
    instance_mask: torch.Tensor | None = None
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.values, (list, tuple)):
            self.values = [torch.as_tensor(b) for b in self.values]
        else:
            self.values = torch.as_tensor(self.values)
        self.present = torch.as_tensor(self.present)
        if self.instance_mask is not None:
            self.instance_mask = torch.as_tensor(self.instance_mask)
        self._validate()

    def _fail(self, field_name: str, problem: str) -> FusionDataError:
        return FusionDataError(f"modality '{self.name}', field '{field_name}': {problem}")

    @classmethod
    def from_bags(cls, name: str, bags: Sequence[object], feature_names: list[str] | None = None) -> "ModalityData":
        """Ragged bags: one float32 [T_i, d] array per patient, None (or an empty bag) where absent."""
        dims = {np.asarray(b).shape[1] for b in bags if b is not None and np.asarray(b).ndim == 2}
        if len(dims) != 1:
            raise FusionDataError(f"modality '{name}', field 'values': bags need one feature dimension, found {sorted(dims)}")
        d = dims.pop()
        tensors = [torch.zeros(0, d) if b is None else torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in bags]
        present = torch.tensor([t.shape[0] > 0 for t in tensors], dtype=torch.bool)
        return cls(name, tensors, present, feature_names=feature_names)

    @property
    def is_ragged(self) -> bool:
        """True for ragged bags (a list of [T_i, d] tensors)."""
        return isinstance(self.values, list)

    def _validate_ragged(self) -> None:
        bags, p = self.values, self.present
        n = len(bags)
        if p.dtype != torch.bool or p.shape != (n,):
            raise self._fail("present", f"expected bool tensor of shape ({n},), got {p.dtype} {tuple(p.shape)}")
        if self.instance_mask is not None:
            raise self._fail("instance_mask", "must be None for ragged bags (they are padded per mini-batch)")
        if n == 0:
            raise self._fail("values", "no bag")
        d = bags[0].shape[-1] if bags[0].dim() == 2 else -1
        for i, b in enumerate(bags):
            if b.dtype != torch.float32 or b.dim() != 2 or b.shape[1] != d:
                raise self._fail("values", f"bag {i}: expected float32 [T, {d}], got {b.dtype} {tuple(b.shape)}")
            if bool(p[i]) and b.shape[0] == 0:
                raise self._fail("values", f"bag {i} is present but empty")
            if not bool(torch.isfinite(b).all()):
                raise self._fail("values", f"bag {i} holds NaN/inf")
        if self.feature_names is not None and len(self.feature_names) != d:
            raise self._fail("feature_names", f"expected {d} names, got {len(self.feature_names)}")

    def _validate(self) -> None:
        v, p, m = self.values, self.present, self.instance_mask
        if not isinstance(self.name, str) or not self.name:
            raise FusionDataError(f"modality name must be a non-empty string, got {self.name!r}")
        if self.is_ragged:
            return self._validate_ragged()
        if v.dtype != torch.float32:
            raise self._fail("values", f"expected dtype torch.float32, got {v.dtype}")
        if v.dim() not in (2, 3):
            raise self._fail("values", f"expected [N, d] vectors or [N, T, d] bags, got shape {tuple(v.shape)}")
        n = v.shape[0]
        if p.dtype != torch.bool or p.shape != (n,):
            raise self._fail("present", f"expected bool tensor of shape ({n},), got {p.dtype} {tuple(p.shape)}")
        if v.dim() == 2 and m is not None:
            raise self._fail("instance_mask", "must be None for a vector modality [N, d]")
        if v.dim() == 3:
            if m is None:
                raise self._fail("instance_mask", f"required for a bag modality of shape {tuple(v.shape)}")
            if m.dtype != torch.bool or m.shape != v.shape[:2]:
                raise self._fail(
                    "instance_mask", f"expected bool tensor of shape {tuple(v.shape[:2])}, got {m.dtype} {tuple(m.shape)}"
                )
            empty = p & ~m.any(dim=1)
            if bool(empty.any()):
                raise self._fail(
                    "instance_mask", f"{int(empty.sum())} present patient(s) have no valid instance (first row {int(empty.nonzero()[0])})"
                )
        bad = ~torch.isfinite(v)
        if bool(bad.any()):
            rows = bad.reshape(n, -1).any(dim=1)
            raise self._fail(
                "values",
                f"{int(rows.sum())} row(s) hold NaN/inf (first row {int(rows.nonzero()[0])}); "
                "absent rows must hold 0 and be marked present=False",
            )
        if self.feature_names is not None and len(self.feature_names) != v.shape[-1]:
            raise self._fail("feature_names", f"expected {v.shape[-1]} names, got {len(self.feature_names)}")

    @property
    def is_bag(self) -> bool:
        """True for bags of instances (padded [N, T, d] or ragged)."""
        return self.is_ragged or self.values.dim() == 3

    @property
    def n_patients(self) -> int:
        """Number of rows N."""
        return len(self.values) if self.is_ragged else int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension d (per instance for bags)."""
        return int(self.values[0].shape[-1]) if self.is_ragged else int(self.values.shape[-1])

    def padded(self, indices: Sequence[int] | np.ndarray | torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(values, instance mask or None, present) of rows `indices`; ragged bags are zero-padded to the
        longest bag among those rows only."""
        idx = torch.arange(self.n_patients) if indices is None else _as_index(indices, self.n_patients, self.name)
        if not self.is_ragged:
            im = None if self.instance_mask is None else self.instance_mask[idx]
            return self.values[idx], im, self.present[idx]
        bags = [self.values[i] for i in idx.tolist()]
        t_max = max([b.shape[0] for b in bags] + [1])
        values = torch.zeros(len(bags), t_max, self.dim)
        mask = torch.zeros(len(bags), t_max, dtype=torch.bool)
        for j, b in enumerate(bags):
            values[j, : b.shape[0]] = b
            mask[j, : b.shape[0]] = True
        return values, mask, self.present[idx]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "ModalityData":
        """Rows ``indices`` as a new ModalityData."""
        idx = _as_index(indices, self.n_patients, f"modality '{self.name}' subset")
        if self.is_ragged:
            return ModalityData(self.name, [self.values[i] for i in idx.tolist()], self.present[idx],
                                feature_names=None if self.feature_names is None else list(self.feature_names))
        return ModalityData(
            name=self.name,
            values=self.values[idx],
            present=self.present[idx],
            instance_mask=None if self.instance_mask is None else self.instance_mask[idx],
            feature_names=None if self.feature_names is None else list(self.feature_names),
        )


@dataclass
class MultimodalDataset:
    """Patients x modalities with presence masks and labels.

    ``y`` is int64 [N] class ids (classification), float32 [N] or [N, k] targets
    (regression) or a ``(time, event)`` pair of float32 [N] / bool [N] tensors
    (survival; time in the cohort's unit, e.g. days), or None (unlabelled).
    """

    patients: list[str]
    modalities: dict[str, ModalityData]
    y: Labels = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patients = [str(p) for p in self.patients]
        self.modalities = dict(self.modalities)
        self.y = self._normalise_y(self.y)
        self._validate()

    # ------------------------------------------------------------------ checks
    def _normalise_y(self, y: object) -> Labels:
        if y is None:
            return None
        if isinstance(y, tuple):
            if len(y) != 2:
                raise FusionDataError(f"survival labels y must be (time, event), got a tuple of {len(y)}")
            time = torch.as_tensor(np.asarray(y[0], dtype=np.float32))
            event = torch.as_tensor(np.asarray(y[1])).to(torch.bool)
            return (time, event)
        t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
        if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool):
            return t.to(torch.int64)
        return t.to(torch.float32)

    def _validate(self) -> None:
        n = len(self.patients)
        if n == 0:
            raise FusionDataError("dataset has no patients")
        if len(set(self.patients)) != n:
            dup = pd.Index(self.patients)[pd.Index(self.patients).duplicated()][0]
            raise FusionDataError(f"patients: ids must be unique, '{dup}' occurs more than once")
        if not self.modalities:
            raise FusionDataError("dataset has no modality")
        for key, mod in self.modalities.items():
            if not isinstance(mod, ModalityData):
                raise FusionDataError(f"modality '{key}': expected ModalityData, got {type(mod).__name__}")
            if mod.name != key:
                raise FusionDataError(f"modality '{key}': key differs from ModalityData.name '{mod.name}'")
            if mod.n_patients != n:
                raise FusionDataError(f"modality '{key}', field 'values': expected {n} rows (one per patient), got {mod.n_patients}")
        if self.y is None:
            return
        if isinstance(self.y, tuple):
            time, event = self.y
            if time.shape != (n,) or event.shape != (n,):
                raise FusionDataError(f"y (time, event): expected shapes ({n},), got {tuple(time.shape)} and {tuple(event.shape)}")
            if not bool(torch.isfinite(time).all()) or bool((time < 0).any()):
                raise FusionDataError("y time: survival times must be finite and >= 0")
            return
        if self.y.shape[0] != n or self.y.dim() not in (1, 2):
            raise FusionDataError(f"y: expected {n} labels ([N] or [N, k]), got shape {tuple(self.y.shape)}")
        if self.y.is_floating_point() and not bool(torch.isfinite(self.y).all()):
            raise FusionDataError("y: regression targets hold NaN/inf")
        if not self.y.is_floating_point() and bool((self.y < 0).any()):
            raise FusionDataError("y: class ids must be >= 0")

    # -------------------------------------------------------------- properties
    @property
    def n_patients(self) -> int:
        """Number of patients N."""
        return len(self.patients)

    @property
    def modality_names(self) -> list[str]:
        """Modality names in insertion order."""
        return list(self.modalities)

    @property
    def in_dims(self) -> dict[str, int]:
        """Feature dimension per modality."""
        return {k: m.dim for k, m in self.modalities.items()}

    @property
    def bag_modalities(self) -> list[str]:
        """Names of the bag ([N, T, d]) modalities."""
        return [k for k, m in self.modalities.items() if m.is_bag]

    def presence(self, modalities: Iterable[str] | None = None) -> torch.Tensor:
        """Bool [N, M] presence matrix for ``modalities`` (default: all)."""
        names = self.modality_names if modalities is None else list(modalities)
        self._check_names(names)
        return torch.stack([self.modalities[k].present for k in names], dim=1)

    # -------------------------------------------------------------- transforms
    def _check_names(self, names: Iterable[str]) -> None:
        unknown = [k for k in names if k not in self.modalities]
        if unknown:
            raise FusionDataError(f"unknown modality {unknown}; dataset has {self.modality_names}")

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "MultimodalDataset":
        """Patients ``indices`` (positions) as a new dataset."""
        idx = _as_index(indices, self.n_patients, "dataset subset")
        y: Labels
        if self.y is None:
            y = None
        elif isinstance(self.y, tuple):
            y = (self.y[0][idx], self.y[1][idx])
        else:
            y = self.y[idx]
        return MultimodalDataset(
            patients=[self.patients[i] for i in idx.tolist()],
            modalities={k: m.subset(idx) for k, m in self.modalities.items()},
            y=y,
            meta=dict(self.meta),
        )

    def select(self, modality_names: Sequence[str]) -> "MultimodalDataset":
        """The same patients restricted to ``modality_names`` (in that order)."""
        names = list(modality_names)
        if not names:
            raise FusionDataError("select: need at least one modality")
        self._check_names(names)
        return MultimodalDataset(
            patients=list(self.patients), modalities={k: self.modalities[k] for k in names}, y=self.y, meta=dict(self.meta)
        )

    def standardise(self, train_idx: Sequence[int] | np.ndarray | torch.Tensor) -> "MultimodalDataset":
        """Z-score every modality's features with the mean/std of the training fold's PRESENT patients only.

        Vector modalities use the present training rows; bag modalities use the valid
        instances of the present training patients. Absent rows stay exactly 0. Features
        with zero spread in training keep scale 1. The statistics go into ``meta['standardise']``.
        """
        idx = _as_index(train_idx, self.n_patients, "standardise train_idx")
        new_mods: dict[str, ModalityData] = {}
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for k, m in self.modalities.items():
            train_present = m.present[idx]
            if m.is_ragged:
                rows = [m.values[i] for i, ok in zip(idx.tolist(), train_present.tolist()) if ok]
                rows = torch.cat(rows) if rows else torch.zeros(0, m.dim)
            elif m.is_bag:
                rows = m.values[idx][train_present]
                rows = rows[m.instance_mask[idx][train_present]]
            else:
                rows = m.values[idx][train_present]
            if rows.shape[0] == 0:
                raise FusionDataError(f"modality '{k}': no present training patient to standardise with")
            mean = rows.mean(dim=0)
            std = rows.std(dim=0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(mean)
            std = torch.where(std > 1e-8, std, torch.ones_like(std))
            if m.is_ragged:
                bags = [(b - mean) / std if ok else b for b, ok in zip(m.values, m.present.tolist())]
                new_mods[k] = ModalityData(k, bags, m.present.clone(), None, m.feature_names)
                stats[k] = (mean, std)
                continue
            z = (m.values - mean) / std
            keep = m.present[:, None] if not m.is_bag else (m.present[:, None] & m.instance_mask)[..., None]
            z = torch.where(keep, z, torch.zeros_like(z))
            new_mods[k] = ModalityData(k, z, m.present.clone(), m.instance_mask, m.feature_names)
            stats[k] = (mean, std)
        meta = dict(self.meta)
        meta["standardise"] = stats
        return MultimodalDataset(patients=list(self.patients), modalities=new_mods, y=self.y, meta=meta)

    def to_batch(
        self,
        indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        modalities: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, dict[str, torch.Tensor | None]]:
        """Model input: ``{modality: {'values', 'mask', 'present'}}`` for rows ``indices`` on ``device``
        (ragged bags padded to the longest bag of these rows)."""
        names = self.modality_names if modalities is None else list(modalities)
        self._check_names(names)
        idx = None if indices is None else _as_index(indices, self.n_patients, "to_batch")
        out: dict[str, dict[str, torch.Tensor | None]] = {}
        for k in names:
            v, im, p = self.modalities[k].padded(idx)
            out[k] = {
                "values": v.to(device) if device is not None else v,
                "mask": None if im is None else (im.to(device) if device is not None else im),
                "present": p.to(device) if device is not None else p,
            }
        return out

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_frames(
        cls,
        frames: Mapping[str, pd.DataFrame],
        patients: Sequence[str],
        y: object = None,
    ) -> "MultimodalDataset":
        """Vector modalities from patient-indexed DataFrames (numeric columns = features).

        A patient without a row in a frame gets present=False and zeros (masked by
        every model). Rows for patients not in ``patients`` are ignored. NaN inside a
        present row is an error (impute upstream, explicitly).
        """
        patients = [str(p) for p in patients]
        if isinstance(y, pd.Series):
            labels = y.set_axis(y.index.astype(str)).reindex(patients)
            if labels.isna().any():
                raise FusionDataError(f"y: no label for patient '{labels.index[labels.isna()][0]}'")
            y = labels.to_numpy()
        mods: dict[str, ModalityData] = {}
        for name, df in frames.items():
            if not isinstance(df, pd.DataFrame):
                raise FusionDataError(f"modality '{name}': expected a pandas DataFrame, got {type(df).__name__}")
            index = df.index.astype(str)
            if index.has_duplicates:
                raise FusionDataError(f"modality '{name}', index: patient '{index[index.duplicated()][0]}' has more than one row")
            non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
            if non_numeric:
                raise FusionDataError(f"modality '{name}': columns {non_numeric[:5]} are not numeric")
            frame = df.set_axis(index, axis=0)
            present = np.asarray(pd.Index(patients).isin(index))
            aligned = frame.reindex(patients).to_numpy(dtype=np.float32)
            if np.isnan(aligned[present]).any():
                row = int(np.flatnonzero(np.isnan(aligned[present]).any(axis=1))[0])
                pid = np.asarray(patients)[present][row]
                raise FusionDataError(f"modality '{name}': patient '{pid}' has NaN features; impute explicitly upstream")
            aligned[~present] = 0.0
            mods[name] = ModalityData(
                name=name,
                values=torch.from_numpy(aligned),
                present=torch.from_numpy(present),
                feature_names=[str(c) for c in frame.columns],
            )
        return cls(patients=patients, modalities=mods, y=y)
