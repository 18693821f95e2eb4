"""Real drug molecules with their primary targets, and a synthetic compound-activity table.

``KNOWN_DRUGS`` holds approved / clinical drugs with hand-checked SMILES (each one's RDKit
formula equals its published molecular formula; ``tests/molecules/test_compounds.py`` checks it)
and primary target genes as HGNC symbols. ``write_compounds_table`` writes a ChEMBL-like
activity table (activities in nM) in which each planted target gets real inhibitors (potent,
pchembl 7-9, or only moderately potent, 6-7), well-drugged decoy genes get potent inhibitors too
(so chemistry alone cannot find the planted targets), and every other gene gets only weak
counter-screen measurements (pchembl 4-5.5), plus two deliberately unparsable SMILES rows that
readers must skip and report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "KnownDrug",
    "KNOWN_DRUGS",
    "CANDIDATE_TARGETS",
    "BAD_SMILES",
    "POTENT_PCHEMBL",
    "MODERATE_PCHEMBL",
    "WEAK_PCHEMBL",
    "drugs_for_gene",
    "compound_id_for",
    "write_compounds_table",
]


@dataclass(frozen=True)
class KnownDrug:
    """One real drug: name, SMILES, published molecular formula and primary target genes (HGNC)."""

    name: str
    smiles: str
    formula: str
    targets: tuple[str, ...]
    oncology: bool = True


_D = KnownDrug
KNOWN_DRUGS: tuple[KnownDrug, ...] = (
    # --- BCR-ABL / KIT ---
    _D("imatinib", "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1", "C29H31N7O", ("ABL1", "KIT", "PDGFRA")),
    _D("dasatinib", "Cc1nc(Nc2ncc(C(=O)Nc3c(C)cccc3Cl)s2)cc(N2CCN(CCO)CC2)n1", "C22H26ClN7O2S", ("ABL1", "SRC", "KIT")),
    _D("nilotinib", "Cc1cn(-c2cc(NC(=O)c3ccc(C)c(Nc4nccc(-c5cccnc5)n4)c3)cc(C(F)(F)F)c2)cn1", "C28H22F3N7O", ("ABL1", "KIT")),
    _D("bosutinib", "COc1cc(Nc2c(C#N)cnc3cc(OCCCN4CCN(C)CC4)c(OC)cc23)c(Cl)cc1Cl", "C26H29Cl2N5O3", ("ABL1", "SRC")),
    _D("ponatinib", "Cc1ccc(C(=O)Nc2ccc(CN3CCN(C)CC3)c(C(F)(F)F)c2)cc1C#Cc1cnc2cccnn12", "C29H27F3N6O", ("ABL1",)),
    # --- EGFR / ERBB2 ---
    _D("gefitinib", "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1", "C22H24ClFN4O3", ("EGFR",)),
    _D("erlotinib", "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC", "C22H23N3O4", ("EGFR",)),
    _D("osimertinib", "C=CC(=O)Nc1cc(Nc2nccc(-c3cn(C)c4ccccc34)n2)c(OC)cc1N(C)CCN(C)C", "C28H33N7O2", ("EGFR",)),
    _D("afatinib", "CN(C)C/C=C/C(=O)Nc1cc2c(Nc3ccc(F)c(Cl)c3)ncnc2cc1O[C@H]1CCOC1", "C24H25ClFN5O3", ("EGFR", "ERBB2", "ERBB4")),
    _D("lapatinib", "CS(=O)(=O)CCNCc1ccc(-c2ccc3ncnc(Nc4ccc(OCc5cccc(F)c5)c(Cl)c4)c3c2)o1", "C29H26ClFN4O4S", ("EGFR", "ERBB2")),
    _D("neratinib", "CCOc1cc2ncc(C#N)c(Nc3ccc(OCc4ccccn4)c(Cl)c3)c2cc1NC(=O)/C=C/CN(C)C", "C30H29ClN6O3", ("ERBB2", "EGFR", "ERBB4")),
    _D("tucatinib", "Cc1cc(Nc2ncnc3ccc(NC4=NC(C)(C)CO4)cc23)ccc1Oc1ccn2ncnc2c1", "C26H24N8O2", ("ERBB2",)),
    # --- ALK / ROS1 ---
    _D("crizotinib", "C[C@@H](Oc1cc(-c2cnn(C3CCNCC3)c2)cnc1N)c1c(Cl)ccc(F)c1Cl", "C21H22Cl2FN5O", ("ALK", "MET", "ROS1")),
    _D("alectinib", "CCc1cc2c(cc1N1CCC(N3CCOCC3)CC1)C(C)(C)c1[nH]c3cc(C#N)ccc3c1C2=O", "C30H34N4O2", ("ALK", "RET")),
    _D("ceritinib", "Cc1cc(Nc2ncc(Cl)c(Nc3ccccc3S(=O)(=O)C(C)C)n2)c(OC(C)C)cc1C1CCNCC1", "C28H36ClN5O3S", ("ALK",)),
    _D("brigatinib", "COc1cc(N2CCC(N3CCN(C)CC3)CC2)ccc1Nc1ncc(Cl)c(Nc2ccccc2P(C)(C)=O)n1", "C29H39ClN7O2P", ("ALK",)),
    _D("lorlatinib", "C[C@H]1Oc2cc(cnc2N)-c2c(C#N)n(C)nc2CN(C)C(=O)c2ccc(F)cc21", "C21H19FN6O2", ("ALK", "ROS1")),
    # --- MET ---
    _D("capmatinib", "CNC(=O)c1ccc(-c2cnc3ncc(Cc4ccc5ncccc5c4)n3n2)cc1F", "C23H17FN6O", ("MET",)),
    _D("tepotinib", "CN1CCC(COc2cnc(-c3cccc(Cn4nc(-c5cccc(C#N)c5)ccc4=O)c3)nc2)CC1", "C29H28N6O2", ("MET",)),
    _D("cabozantinib", "COc1cc2nccc(Oc3ccc(NC(=O)C4(C(=O)Nc5ccc(F)cc5)CC4)cc3)c2cc1OC", "C28H24FN3O5", ("MET", "KDR", "RET")),
    # --- CDK4/6 ---
    _D("palbociclib", "CC(=O)C1=C(C)c2cnc(Nc3ccc(N4CCNCC4)cn3)nc2N(C2CCCC2)C1=O", "C24H29N7O2", ("CDK4", "CDK6")),
    _D("ribociclib", "CN(C)C(=O)c1cc2cnc(Nc3ccc(N4CCNCC4)cn3)nc2n1C1CCCC1", "C23H30N8O", ("CDK4", "CDK6")),
    _D("abemaciclib", "CCN1CCN(Cc2ccc(Nc3ncc(F)c(-c4cc(F)c5nc(C)n(C(C)C)c5c4)n3)nc2)CC1", "C27H32F2N8", ("CDK4", "CDK6")),
    # --- PI3K ---
    _D("alpelisib", "Cc1nc(-c2ccnc(C(C)(C)C(F)(F)F)c2)sc1NC(=O)N1CCC[C@H]1C(N)=O", "C19H22F3N5O2S", ("PIK3CA",)),
    _D("pictilisib", "CS(=O)(=O)N1CCN(Cc2cc3nc(-c4cccc5[nH]ncc45)nc(N4CCOCC4)c3s2)CC1", "C23H27N7O3S2", ("PIK3CA", "PIK3CD")),
    _D("buparlisib", "Nc1cc(C(F)(F)F)c(-c2cc(N3CCOCC3)nc(N3CCOCC3)n2)cn1", "C18H21F3N6O2", ("PIK3CA", "PIK3CB", "PIK3CD", "PIK3CG")),
    _D("idelalisib", "CC[C@H](Nc1ncnc2[nH]cnc12)c1nc2cccc(F)c2c(=O)n1-c1ccccc1", "C22H18FN7O", ("PIK3CD",)),
    # --- RAF / MEK ---
    _D("vemurafenib", "CCCS(=O)(=O)Nc1ccc(F)c(C(=O)c2c[nH]c3ncc(-c4ccc(Cl)cc4)cc23)c1F", "C23H18ClF2N3O3S", ("BRAF",)),
    _D("dabrafenib", "CC(C)(C)c1nc(-c2cccc(NS(=O)(=O)c3c(F)cccc3F)c2F)c(-c2ccnc(N)n2)s1", "C23H20F3N5O2S2", ("BRAF",)),
    _D("encorafenib", "COC(=O)N[C@@H](C)CNc1nccc(-c2cn(C(C)C)nc2-c2cc(Cl)cc(NS(C)(=O)=O)c2F)n1", "C22H27ClFN7O4S", ("BRAF",)),
    _D("sorafenib", "CNC(=O)c1cc(Oc2ccc(NC(=O)Nc3ccc(Cl)c(C(F)(F)F)c3)cc2)ccn1", "C21H16ClF3N4O3", ("RAF1", "BRAF", "KDR", "PDGFRB")),
    _D("trametinib", "CC(=O)Nc1cccc(-n2c(=O)n(C3CC3)c(=O)c3c(Nc4ccc(I)cc4F)n(C)c(=O)c(C)c32)c1", "C26H23FIN5O4", ("MAP2K1", "MAP2K2")),
    _D("cobimetinib", "O=C(c1ccc(F)c(F)c1Nc1ccc(I)cc1F)N1CC(O)([C@@H]2CCCCN2)C1", "C21H21F3IN3O2", ("MAP2K1", "MAP2K2")),
    _D("binimetinib", "Cn1cnc2c(F)c(Nc3ccc(Br)cc3F)c(C(=O)NOCCO)cc21", "C17H15BrF2N4O3", ("MAP2K1", "MAP2K2")),
    _D("selumetinib", "Cn1cnc2c(F)c(Nc3ccc(Br)cc3Cl)c(C(=O)NOCCO)cc21", "C17H15BrClFN4O3", ("MAP2K1", "MAP2K2")),
    # --- KRAS G12C ---
    _D("sotorasib", "C=CC(=O)N1CCN(c2nc(=O)n(-c3c(C)ccnc3C(C)C)c3nc(-c4c(O)cccc4F)c(F)cc23)[C@@H](C)C1", "C30H30F2N6O3", ("KRAS",)),
    _D("adagrasib", "C=C(F)C(=O)N1CCN(c2nc(OC[C@@H]3CCCN3C)nc3c2CCN(c2cccc4cccc(Cl)c24)C3)C[C@@H]1CC#N", "C32H35ClFN7O2", ("KRAS",)),
    # --- PARP ---
    _D("olaparib", "O=C(c1cc(Cc2n[nH]c(=O)c3ccccc23)ccc1F)N1CCN(C(=O)C2CC2)CC1", "C24H23FN4O3", ("PARP1", "PARP2")),
    _D("niraparib", "NC(=O)c1cccc2cn(-c3ccc([C@@H]4CCCNC4)cc3)nc12", "C19H20N4O", ("PARP1", "PARP2")),
    _D("rucaparib", "CNCc1ccc(-c2[nH]c3cc(F)cc4c3c2CCNC4=O)cc1", "C19H18FN3O", ("PARP1", "PARP2", "PARP3")),
    _D("talazoparib", "Cn1ncnc1[C@H]1c2n[nH]c(=O)c3cc(F)cc(c32)N[C@@H]1c1ccc(F)cc1", "C19H14F2N6O", ("PARP1", "PARP2")),
    # --- other oncology targets ---
    _D("sunitinib", "CCN(CC)CCNC(=O)c1c(C)[nH]c(/C=C2\\C(=O)Nc3ccc(F)cc32)c1C", "C22H27FN4O2", ("KDR", "PDGFRB", "KIT", "FLT3")),
    _D("axitinib", "CNC(=O)c1ccccc1Sc1ccc2c(/C=C/c3ccccn3)n[nH]c2c1", "C22H18N4OS", ("KDR", "FLT1", "FLT4")),
    _D("ibrutinib", "C=CC(=O)N1CCC[C@@H](n2nc(-c3ccc(Oc4ccccc4)cc3)c3c(N)ncnc32)C1", "C25H24N6O2", ("BTK",)),
    _D("ruxolitinib", "N#CC[C@H](C1CCCC1)n1cc(-c2ncnc3[nH]ccc23)cn1", "C17H18N6", ("JAK1", "JAK2")),
    _D("tamoxifen", "CC/C(=C(\\c1ccccc1)c1ccc(OCCN(C)C)cc1)c1ccccc1", "C26H29NO", ("ESR1",)),
    _D("enzalutamide", "CNC(=O)c1ccc(N2C(=S)N(c3ccc(C#N)c(C(F)(F)F)c3)C(=O)C2(C)C)cc1F", "C21H16F4N4O2S", ("AR",)),
    _D("methotrexate", "CN(Cc1cnc2nc(N)nc(N)c2n1)c1ccc(C(=O)N[C@@H](CCC(=O)O)C(=O)O)cc1", "C20H22N8O5", ("DHFR",)),
    _D("fluorouracil", "O=c1[nH]cc(F)c(=O)[nH]1", "C4H3FN2O2", ("TYMS",)),
    # --- non-oncology drugs (decoys for weak, off-target measurements) ---
    _D("aspirin", "CC(=O)Oc1ccccc1C(=O)O", "C9H8O4", ("PTGS1", "PTGS2"), oncology=False),
    _D("ibuprofen", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "C13H18O2", ("PTGS1", "PTGS2"), oncology=False),
    _D("paracetamol", "CC(=O)Nc1ccc(O)cc1", "C8H9NO2", ("PTGS2",), oncology=False),
    _D("caffeine", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "C8H10N4O2", ("ADORA1", "ADORA2A"), oncology=False),
    _D("metformin", "CN(C)C(=N)N=C(N)N", "C4H11N5", ("PRKAB1",), oncology=False),
    _D("atorvastatin", "CC(C)c1c(C(=O)Nc2ccccc2)c(-c2ccccc2)c(-c2ccc(F)cc2)n1CC[C@@H](O)C[C@@H](O)CC(=O)O", "C33H35FN2O5", ("HMGCR",), oncology=False),
    _D("simvastatin", "CCC(C)(C)C(=O)O[C@H]1C[C@@H](C)C=C2C=C[C@H](C)[C@H](CC[C@@H]3C[C@@H](O)CC(=O)O3)[C@H]21", "C25H38O5", ("HMGCR",), oncology=False),
    _D("warfarin", "CC(=O)CC(c1ccccc1)C1=C(O)c2ccccc2OC1=O", "C19H16O4", ("VKORC1",), oncology=False),
    _D("omeprazole", "COc1ccc2[nH]c(S(=O)Cc3ncc(C)c(OC)c3C)nc2c1", "C17H19N3O3S", ("ATP4A",), oncology=False),
    _D("sildenafil", "CCCc1nn(C)c2c(=O)[nH]c(-c3cc(S(=O)(=O)N4CCN(C)CC4)ccc3OCC)nc12", "C22H30N6O4S", ("PDE5A",), oncology=False),
    _D("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21", "C16H13ClN2O", ("GABRA1",), oncology=False),
    _D("propranolol", "CC(C)NCC(O)COc1cccc2ccccc12", "C16H21NO2", ("ADRB1", "ADRB2"), oncology=False),
)
del _D

# Druggable cancer genes with >= 2 real drugs each in KNOWN_DRUGS (planted targets and decoys).
CANDIDATE_TARGETS: tuple[str, ...] = (
    "EGFR", "ERBB2", "MET", "ALK", "CDK4", "CDK6", "PIK3CA", "BRAF", "MAP2K1", "KRAS", "PARP1", "ABL1",
)

# Deliberately unparsable SMILES: an unclosed branch/ring, and a 5-ring of aromatic carbons (cannot kekulize).
BAD_SMILES: tuple[str, ...] = ("C1CC(", "c1cccc1")

POTENT_PCHEMBL = (7.0, 9.0)  # planted target-drug pairs and well-drugged decoys
MODERATE_PCHEMBL = (6.0, 7.0)  # planted targets with only moderately potent compounds
WEAK_PCHEMBL = (4.0, 5.5)  # counter-screen / off-target measurements

_COLUMNS = ["compound_id", "name", "smiles", "target_gene", "activity_type", "activity_value_nm", "source"]
_SOURCE = "synthetic-assay"


def compound_id_for(drug: KnownDrug) -> str:
    """Stable compound id ('FXC00001' ...) of a drug: its position in KNOWN_DRUGS."""
    return f"FXC{KNOWN_DRUGS.index(drug) + 1:05d}"


def drugs_for_gene(gene: str) -> list[KnownDrug]:
    """Drugs in KNOWN_DRUGS whose primary targets include the gene (HGNC symbol)."""
    return [d for d in KNOWN_DRUGS if gene in d.targets]


def _activity_nm(pchembl: np.ndarray) -> np.ndarray:
    """nM activity for pchembl values, rounded to 4 significant figures as an assay would report."""
    value_nm = 10.0 ** (9.0 - np.asarray(pchembl, dtype=float))
    digits = 3 - np.floor(np.log10(value_nm)).astype(int)
    return np.array([round(v, int(d)) for v, d in zip(value_nm, digits)])


def write_compounds_table(
    path: str | os.PathLike,
    *,
    target_genes_high: list[str],
    other_genes: list[str],
    seed: int,
    potent_decoys: list[str] | None = None,
    moderate_genes: list[str] | None = None,
) -> pd.DataFrame:
    """Write a compound-activity TSV (activity_value_nm in nM) and return it as written.

    Each gene of ``target_genes_high`` gets every real drug whose primary target it is (at least
    two; when fewer exist, other oncology kinase inhibitors stand in as analogues), each with
    one or two potent measurements (pchembl 7-9), plus a few weak measurements of unrelated
    drugs; those also in ``moderate_genes`` get moderately potent measurements (pchembl 6-7)
    instead. Genes of ``potent_decoys`` get the same potent treatment as planted targets (decoys
    for chemistry-only ranking). Genes of ``other_genes`` get only weak measurements (pchembl
    4-5.5). Two rows carry unparsable SMILES (``BAD_SMILES``). Deterministic given ``seed``.
    """
    decoys = list(dict.fromkeys(potent_decoys or []))
    moderate = set(moderate_genes or [])
    high = list(dict.fromkeys(target_genes_high))
    others = [g for g in dict.fromkeys(other_genes)]
    for a, b, what in ((high, others, "target_genes_high and other_genes"),
                       (decoys, others, "potent_decoys and other_genes"),
                       (high, decoys, "target_genes_high and potent_decoys")):
        overlap = sorted(set(a) & set(b))
        if overlap:
            raise ValueError(f"genes {overlap} are in both {what}")
    if not moderate <= set(high):
        raise ValueError(f"moderate_genes {sorted(moderate - set(high))} are not in target_genes_high")
    rng = np.random.default_rng(seed)
    oncology = [d for d in KNOWN_DRUGS if d.oncology]
    rows: list[dict] = []

    def add(drug: KnownDrug, gene: str, lo_hi: tuple[float, float], n: int, types: list[str]) -> None:
        pchembl = rng.uniform(lo_hi[0], lo_hi[1] - 0.05, size=n)
        for p, value_nm in zip(pchembl, _activity_nm(pchembl)):
            rows.append({
                "compound_id": compound_id_for(drug), "name": drug.name, "smiles": drug.smiles,
                "target_gene": gene, "activity_type": str(rng.choice(types)),
                "activity_value_nm": value_nm, "source": _SOURCE,
            })

    for gene in high + decoys:
        potent = drugs_for_gene(gene)
        if len(potent) < 2:
            stand_ins = [d for d in oncology if d not in potent]
            picks = rng.choice(len(stand_ins), size=2 - len(potent), replace=False)
            potent = potent + [stand_ins[i] for i in sorted(picks)]
        for drug in potent:
            add(drug, gene, MODERATE_PCHEMBL if gene in moderate else POTENT_PCHEMBL, int(rng.integers(1, 3)),
                ["IC50", "Ki", "Kd"])
        unrelated = [d for d in KNOWN_DRUGS if d not in potent and gene not in d.targets]
        for i in rng.choice(len(unrelated), size=min(2, len(unrelated)), replace=False):
            add(unrelated[i], gene, WEAK_PCHEMBL, 1, ["IC50", "EC50"])

    for gene in others:
        unrelated = [d for d in KNOWN_DRUGS if gene not in d.targets]
        n = min(int(rng.integers(2, 5)), len(unrelated))
        for i in rng.choice(len(unrelated), size=n, replace=False):
            add(unrelated[i], gene, WEAK_PCHEMBL, 1, ["IC50", "EC50"])

    table = pd.DataFrame(rows, columns=_COLUMNS)
    genes = high + decoys + others
    for k, bad in enumerate(BAD_SMILES):
        bad_row = pd.DataFrame([{
            "compound_id": f"FXC{9001 + k:05d}", "name": f"corrupt-record-{k + 1}", "smiles": bad,
            "target_gene": genes[int(rng.integers(len(genes)))] if genes else "EGFR",
            "activity_type": "IC50", "activity_value_nm": 25000.0, "source": _SOURCE,
        }], columns=_COLUMNS)
        at = int(rng.integers(0, len(table) + 1))
        table = pd.concat([table.iloc[:at], bad_row, table.iloc[at:]], ignore_index=True)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)
    return table
