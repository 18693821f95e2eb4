"""Planted multimodal data for the fusion tests: each modality carries an independent noisy view of the truth."""

from __future__ import annotations

import numpy as np
import torch

from fusion.data import ModalityData, MultimodalDataset

# name -> (feature dim, bag length T or None)
LAYOUT = {"expr": (12, None), "ct": (6, None), "clin": (4, None), "wsi": (6, 8)}
N_INFORMATIVE = 2


def make_planted(
    n: int = 100,
    seed: int = 0,
    shift: float = 0.5,
    missing: float = 0.25,
    task: str = "binary",
    beta: float = 0.8,
) -> tuple[MultimodalDataset, dict]:
    """Patients with 3 vector modalities + 1 bag modality; returns (dataset, truth).

    binary: y balanced; per modality s_m ~ N(+-shift, 1) (sign from y), conditionally
    independent given y. survival: s_m ~ N(0, 1), log-hazard = beta * sum_m s_m, ~30%
    censored. The first N_INFORMATIVE features of each modality (of every instance for
    the bag) equal s_m plus small noise; the rest is noise. Each modality is missing
    for a ``missing`` fraction of patients (absent rows hold zeros), invalid bag
    instances hold large noise that masking must ignore.
    """
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = rng.permutation(np.arange(n) % 2)
        signals = {m: (2 * y - 1) * shift + rng.normal(size=n) for m in LAYOUT}
    else:
        signals = {m: rng.normal(size=n) for m in LAYOUT}
    mods = {}
    for m, (d, t_len) in LAYOUT.items():
        s = signals[m]
        present = rng.random(n) >= missing
        if t_len is None:
            x = rng.normal(size=(n, d))
            x[:, :N_INFORMATIVE] = s[:, None] + 0.3 * rng.normal(size=(n, N_INFORMATIVE))
            x[~present] = 0.0
            mods[m] = ModalityData(m, torch.tensor(x, dtype=torch.float32), torch.from_numpy(present))
        else:
            x = rng.normal(size=(n, t_len, d))
            x[:, :, :N_INFORMATIVE] += s[:, None, None]
            n_valid = rng.integers(3, t_len + 1, size=n)
            mask = np.arange(t_len)[None, :] < n_valid[:, None]
            x[~mask] = rng.normal(scale=10.0, size=(int((~mask).sum()), d))
            x[~present] = 0.0
            mods[m] = ModalityData(
                m, torch.tensor(x, dtype=torch.float32), torch.from_numpy(present), instance_mask=torch.from_numpy(mask)
            )
    patients = [f"TCGA-FX-{i:04d}" for i in range(1, n + 1)]
    truth = {"signals": signals}
    if task == "binary":
        labels: object = torch.from_numpy(y.astype(np.int64))
        truth["y"] = y
    else:
        log_hazard = beta * sum(signals.values())
        event_time = rng.exponential(scale=np.exp(-log_hazard))
        censor_time = rng.exponential(scale=2.5 * np.median(event_time), size=n)
        time = np.minimum(event_time, censor_time)
        event = event_time <= censor_time
        labels = (time, event)
        truth["log_hazard"] = log_hazard
    return MultimodalDataset(patients=patients, modalities=mods, y=labels), truth
