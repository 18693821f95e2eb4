"""Confounders of the planted target truth: decoy genes strong on one or two evidence kinds only.

Each decoy class mimics a trap that fools a ranking built on a single kind of evidence:

- ``well_drugged``: candidate targets with potent compounds (pChEMBL 7-9) and no cohort signal;
- ``over_expressed``: tumour-vs-normal over-expression stronger than the targets', nothing else;
- ``prognostic_not_over_expressed``: tumour expression drives the hazard, no tumour-normal shift;
- ``co_amplified_passenger``: a real neighbour on the same chromosome arm as an amplified target,
  amplified in the same tumours (and a few more), with no expression, survival or spatial signal;
- ``housekeeping``: very highly expressed everywhere, a small (but, being tight, significant) shift;
- ``spatial_tumour_region``: high in the tumour-region spots of the spatial samples only;
- ``frequently_mutated_long``: long genes (TTN, MUC16 style) hit by many passenger mutations.

Cytobands are the real ones (GRCh38, HGNC) for every gene named here; the planted targets and their
passengers share a chromosome arm. Decoy draws use their own seeded generator, so the rest of the
cohort (subtypes, imaging signals) is drawn exactly as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Real cytogenetic bands (GRCh38) of the genes the planted truth and its decoys use.
CYTOBANDS: dict[str, str] = {
    # candidate targets
    "EGFR": "7p11.2", "ERBB2": "17q12", "MET": "7q31.2", "ALK": "2p23.2", "CDK4": "12q14.1",
    "CDK6": "7q21.2", "PIK3CA": "3q26.32", "BRAF": "7q34", "MAP2K1": "15q22.31", "KRAS": "12p12.1",
    "PARP1": "1q42.12", "ABL1": "9q34.12",
    # passengers (same arm as their target)
    "SEC61G": "7p11.2", "LANCL2": "7p11.2", "GRB7": "17q12", "STARD3": "17q12", "CAV1": "7q31.2",
    "CAV2": "7q31.2", "EML4": "2p21", "LCLAT1": "2p23.1", "TSPAN31": "12q14.1", "AGAP2": "12q14.1",
    "SAMD9": "7q21.2", "SAMD9L": "7q21.2", "ZNF639": "3q26.32", "SOX2": "3q26.33", "AGK": "7q34",
    "MRPS33": "7q34", "SNAPC5": "15q22.31", "SMAD6": "15q22.31", "CASC1": "12p12.1", "LYRM5": "12p12.1",
    "ITPKB": "1q42.12", "PSEN2": "1q42.13", "NUP214": "9q34.13", "LAMC3": "9q34.12",
    # housekeeping
    "ACTB": "7p22.1", "GAPDH": "12p13.31", "RPLP0": "12q24.23", "EEF1A1": "6q13",
    # long, frequently mutated
    "TTN": "2q31.2", "MUC16": "19p13.2", "CSMD3": "8q23.3", "RYR2": "1q43", "LRP1B": "2q22.1",
    # spatial tumour-region only
    "MKI67": "10q26.2", "TOP2A": "17q21.2", "SPP1": "4q22.1", "MMP11": "22q11.23",
    # extras of the cohort
    "TP53": "17p13.1", "PTEN": "10q23.31", "RB1": "13q14.2", "STK11": "19p13.3", "KEAP1": "19p13.2",
    "NF1": "17q11.2", "CDKN2A": "9p21.3", "SMAD4": "18q21.2", "COL1A1": "17q21.33", "COL1A2": "7q21.3",
    "COL3A1": "2q32.2", "ACTA2": "10q23.31", "VIM": "10p13", "FAP": "2q24.2", "PDGFRB": "5q32",
    "DCN": "12q21.33", "LUM": "12q21.33", "POSTN": "13q13.3", "SPARC": "5q33.1", "PPIA": "7p13",
    "FTL": "19q13.33",
}

# Each candidate target -> real neighbours on the same chromosome arm (co-amplified passengers).
PASSENGERS: dict[str, tuple[str, ...]] = {
    "EGFR": ("SEC61G", "LANCL2"), "ERBB2": ("GRB7", "STARD3"), "MET": ("CAV1", "CAV2"),
    "ALK": ("EML4", "LCLAT1"), "CDK4": ("TSPAN31", "AGAP2"), "CDK6": ("SAMD9", "SAMD9L"),
    "PIK3CA": ("ZNF639", "SOX2"), "BRAF": ("AGK", "MRPS33"), "MAP2K1": ("SNAPC5", "SMAD6"),
    "KRAS": ("CASC1", "LYRM5"), "PARP1": ("ITPKB", "PSEN2"), "ABL1": ("NUP214", "LAMC3"),
}
HOUSEKEEPING = ("ACTB", "GAPDH", "RPLP0", "EEF1A1")
LONG_GENES = ("TTN", "MUC16", "CSMD3", "RYR2", "LRP1B")
SPATIAL_ONLY = ("MKI67", "TOP2A", "SPP1", "MMP11")
DECOY_GENES: tuple[str, ...] = tuple(dict.fromkeys(
    [g for ps in PASSENGERS.values() for g in ps] + list(HOUSEKEEPING) + list(LONG_GENES) + list(SPATIAL_ONLY)))

# Effect sizes (natural-log expression units unless noted); the targets' own are in cohort.py.
OVER_EXPRESSED_SHIFT = 2.0       # targets: 1.4 + amplification dosage
PROGNOSTIC_LOG_HAZARD = 1.4      # per SD of the prognostic decoys' shared activity
HOUSEKEEPING_LOG_BOOST = 4.0     # above the gene's baseline, in every sample
HOUSEKEEPING_TUMOUR_SHIFT = 0.3
SPATIAL_ONLY_SHIFT = 2.2         # targets: 1.6 in tumour spots
PASSENGER_EXTRA_AMP = 0.25       # amplified without the target in this fraction of the others
LONG_GENE_MUTATION_RATE = (0.35, 0.55)
N_WELL_DRUGGED = 4
N_PROGNOSTIC = 3


def arm(cytoband: str) -> str:
    """Chromosome arm of a cytoband ('7p11.2' -> '7p')."""
    for i, ch in enumerate(cytoband):
        if ch in "pq":
            return cytoband[: i + 1]
    return cytoband


def cytobands_for(genes: list[str]) -> list[str]:
    """GISTIC 'Cytoband' column: the real band for genes named here; a seeded arbitrary band for the
    rest of the panel (their copy-number calls are position-independent noise)."""
    return [CYTOBANDS.get(g, f"{1 + i % 22}q{11 + i % 30}") for i, g in enumerate(genes)]


def plan_decoys(seed: int, genes: list[str], targets: list[str], candidates: list[str], taken: set[str],
                n_patients: int, amplified: np.ndarray) -> dict[str, Any]:
    """Draw the decoy genes and their latent signals (own generator: the rest of the cohort is unchanged)."""
    rng = np.random.default_rng([seed, 6])
    universe = set(genes)
    well_drugged = sorted(rng.choice([g for g in candidates if g not in targets],
                                     size=N_WELL_DRUGGED, replace=False).tolist())
    passengers = {t: [p for p in PASSENGERS.get(t, ()) if p in universe] for t in targets}
    plain = [g for g in genes if g not in taken and g not in candidates and g not in DECOY_GENES
             and g not in CYTOBANDS]
    prognostic = sorted(rng.choice(plain, size=N_PROGNOSTIC, replace=False).tolist())
    # passengers share their target's amplification (same level) plus a few amplifications of their own
    passenger_amp: dict[str, np.ndarray] = {}
    for k, t in enumerate(targets):
        for p in passengers[t]:
            extra = rng.random(n_patients) < PASSENGER_EXTRA_AMP
            passenger_amp[p] = amplified[:, k] & (rng.random(n_patients) < 0.95) | extra
    return {
        "classes": {
            "well_drugged": well_drugged,
            "prognostic_not_over_expressed": prognostic,
            "co_amplified_passenger": sorted(passenger_amp),
            "housekeeping": [g for g in HOUSEKEEPING if g in universe],
            "spatial_tumour_region": [g for g in SPATIAL_ONLY if g in universe],
            "frequently_mutated_long": [g for g in LONG_GENES if g in universe],
        },
        "passenger_of": {p: t for t in targets for p in passengers[t]},
        "passenger_amp": passenger_amp,
        "prognostic_activity": rng.normal(size=n_patients),
        "long_gene_rate": dict(zip(LONG_GENES, rng.uniform(*LONG_GENE_MUTATION_RATE, size=len(LONG_GENES)))),
    }


def add_tumour_expression(mu: np.ndarray, genes: list[str], decoys: dict[str, Any]) -> None:
    """Add the decoys' signal to tumour log means (patients x genes), in place."""
    gi = {g: i for i, g in enumerate(genes)}
    cls = decoys["classes"]
    for g in cls["prognostic_not_over_expressed"]:
        mu[:, gi[g]] += decoys["prognostic_activity"]
    for g in cls["housekeeping"]:
        mu[:, gi[g]] += HOUSEKEEPING_TUMOUR_SHIFT


def add_baseline_expression(base_log_mean: np.ndarray, genes: list[str], decoys: dict[str, Any]) -> np.ndarray:
    """Baseline log means with the housekeeping genes lifted (every sample, tumour and normal)."""
    out = base_log_mean.copy()
    gi = {g: i for i, g in enumerate(genes)}
    for g in decoys["classes"]["housekeeping"]:
        out[gi[g]] += HOUSEKEEPING_LOG_BOOST
    return out


def prognostic_log_hazard(decoys: dict[str, Any]) -> np.ndarray:
    """Per patient: the log-hazard contribution of the prognostic decoys' activity."""
    return PROGNOSTIC_LOG_HAZARD * decoys["prognostic_activity"]


def add_copy_number(cn: np.ndarray, genes: list[str], targets: list[str], decoys: dict[str, Any]) -> None:
    """Passengers copy their target's amplification calls (genes x patients, in place)."""
    gi = {g: i for i, g in enumerate(genes)}
    for p, amp in decoys["passenger_amp"].items():
        t_row = cn[gi[decoys["passenger_of"][p]]]
        cn[gi[p]] = np.where(amp, np.maximum(t_row, 1), 0)


def mutated_long_genes(rng: np.random.Generator, decoys: dict[str, Any]) -> list[str]:
    """The long genes one patient's tumour carries (passenger) mutations in."""
    return [g for g in decoys["classes"]["frequently_mutated_long"] if rng.random() < decoys["long_gene_rate"][g]]


def add_spatial_tumour_expression(mu: np.ndarray, tumour: np.ndarray, genes: list[str],
                                  decoys: dict[str, Any]) -> None:
    """Spatial-only decoys high in the tumour spots (spots x genes log means, in place)."""
    gi = {g: i for i, g in enumerate(genes)}
    for g in decoys["classes"]["spatial_tumour_region"]:
        mu[tumour, gi[g]] += SPATIAL_ONLY_SHIFT


def target_log_hazard(plan: dict[str, Any]) -> np.ndarray:
    """Log hazard from the targets' activity and amplification (as ``plan_cohort`` draws event times)."""
    return 0.8 * plan["target_activity"] + 0.4 * plan["amplified"].sum(1) - 0.3 * plan["y"]


def plant_decoys(plan: dict[str, Any], seed: int, candidates: list[str]) -> dict[str, Any]:
    """Add the confounders to a cohort plan (decoy genes, their signals, the prognostic hazard)."""
    taken = set(plan["targets"]) | set(plan["de_decoys"]) | set(plan["subtype_genes"])
    d = plan_decoys(seed, plan["genes"], plan["targets"], candidates, taken, len(plan["patients"]),
                    plan["amplified"])
    d["classes"]["over_expressed"] = list(plan["de_decoys"])
    plan["decoys"] = d
    plan["drug_decoys"] = d["classes"]["well_drugged"]
    plan["normal_log_mean"] = add_baseline_expression(plan["base_log_mean"], plan["genes"], d)
    # the prognostic decoys' activity adds to the hazard: same exponential noise, larger hazard
    unit = plan["event_time"] / (900.0 * np.exp(-target_log_hazard(plan)))
    plan["event_time"] = unit * 900.0 * np.exp(-(target_log_hazard(plan) + prognostic_log_hazard(d)))
    # half the planted targets get only moderately potent compounds (pChEMBL 6-7)
    plan["moderate_targets"] = plan["targets"][::2]
    return plan
