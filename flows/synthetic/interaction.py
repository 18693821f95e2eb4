"""The interaction cohort (``CohortConfig.signal = "interaction"``): part of the diagnosis planted in an
interaction across modalities, where only a model that combines modalities non-additively can read it.

Two-class diagnosis ``y`` (``n_diagnoses`` must be 2). On top of the plan of the linear cohort:

- an expression subtype ``e`` in {0, 1} (half the patients each), drawn independently of ``y`` (so ``e`` alone
  says nothing of ``y``), sets the subtype genes of the tumour sample and of the spatial tumour spots:
  ``s_expression, s_spatial ~ N((2e - 1) * interaction_shift, 1)``;
- a PET phenotype ``h = y XOR e`` (an FDG-avid tumour or not; independent of ``y`` too) sets the
  tumour SUV: ``s_pet ~ N((2h - 1) * interaction_shift, 1)``. So ``y = e XOR h``: a high SUVmax means the
  second diagnosis in expression subtype 0 and the first in subtype 1 (a crossover interaction);
- CT and the slides keep the linear part, ``s ~ N((2y - 1) * signal_shift, 1)`` as in the linear cohort
  (``signal_shift = 0`` leaves all of the signal in the interaction).

Neither PET nor expression alone, nor any model additive over modalities (a linear model on all features,
late fusion of per-modality decisions), can read the interaction part. Draws use their own seeded generator:
the subtype, survival and target truth of the plan are those of the linear cohort with the same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIGNALS = ("linear", "interaction")


def check_signal(signal: str, n_diagnoses: int) -> None:
    """ValueError naming the CohortConfig field when ``signal`` is unknown or the interaction cohort is asked
    for with other than two diagnoses."""
    if signal not in SIGNALS:
        raise ValueError(f"CohortConfig.signal: expected one of {list(SIGNALS)}, found {signal!r}")
    if signal == "interaction" and n_diagnoses != 2:
        raise ValueError(f"CohortConfig.n_diagnoses: the interaction cohort plants a two-class diagnosis "
                         f"(y = expression subtype XOR PET phenotype); expected 2, found {n_diagnoses}")


def plant_interaction(plan: dict[str, Any], seed: int, interaction_shift: float) -> dict[str, Any]:
    """The plan with the PET and expression (and spatial) signals replaced by the planted interaction;
    ``plan['interaction']`` holds the per-patient expression subtype and PET phenotype (0/1 arrays)."""
    rng = np.random.default_rng([seed, 31])
    y = np.asarray(plan["y"])
    n = len(y)
    # drawn independently of the diagnosis (not balanced within each: a cross-validated model would then see
    # the opposite imbalance in its training folds and score below chance)
    subtype = rng.permutation(np.arange(n) % 2)
    pet_high = (y ^ subtype).astype(int)
    signals = dict(plan["signals"])
    signals["expression"] = (2 * subtype - 1) * interaction_shift + rng.normal(size=n)
    signals["spatial"] = (2 * subtype - 1) * interaction_shift + rng.normal(size=n)
    signals["pet"] = (2 * pet_high - 1) * interaction_shift + rng.normal(size=n)
    return {**plan, "signals": signals, "interaction": {"expression_subtype": subtype, "pet_high": pet_high}}


def interaction_truth(plan: dict[str, Any], diagnoses: tuple[str, ...], interaction_shift: float) -> dict[str, Any]:
    """truth.json's ``interaction`` record: the rule, its parameters and each patient's subtype and phenotype."""
    inter = plan["interaction"]
    patients = plan["patients"]
    return {
        "rule": f"primary_diagnosis is '{diagnoses[1]}' when expression_subtype XOR pet_high is 1, else "
                f"'{diagnoses[0]}'",
        "interaction_shift": float(interaction_shift),
        "expression_genes": list(plan["subtype_genes"]),
        "pet_phenotype": "tumour SUV: 6 + 2 * s_pet (clipped to 2.5-14), s_pet ~ N((2 * pet_high - 1) * shift, 1)",
        "linear_modalities": ["ct", "wsi"],
        "expression_subtype": {p: int(v) for p, v in zip(patients, inter["expression_subtype"])},
        "pet_high": {p: int(v) for p, v in zip(patients, inter["pet_high"])},
    }
