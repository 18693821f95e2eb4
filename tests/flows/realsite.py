"""A site's folder built from the shared real files, as a hospital hands it over: a TCIA-style DICOM tree
of the two STS patients with their RTSTRUCTs, the Aperio slide and the Visium sample filed under them, and
a plain clinical sheet."""

from __future__ import annotations

import shutil
from pathlib import Path

PATIENTS = ("STS_001", "STS_002")
CLINICAL = ("patient_id,age,sex,histology,os_months,os_event\n"
            "STS_001,61,F,leiomyosarcoma,31.5,1\n"
            "STS_002,47,M,liposarcoma,58.0,0\n")


LIBRARY = ("name,SMILES\n"  # a plain SMILES library (no activities)
           "doxorubicin,COc1cccc2c1C(=O)c1c(O)c3c(c(O)c1C2=O)C[C@@](O)(C(=O)CO)C[C@@H]3O[C@H]1C[C@H](N)[C@H](O)[C@H](C)O1\n"
           "ifosfamide,O=P1(NCCCl)OCCCN1CCCl\n"
           "trabectedin-fragment,c1ccc2[nH]ccc2c1\n")


def build_site(realdata: Path, site: Path) -> Path:
    """Copy the shared files into ``site`` in a site's own layout; returns ``site``.

    imaging/<patient>/<study>/<series>/<n>.dcm (CT, PET, one RTSTRUCT per modality, non-telling names),
    pathology/<patient>-{DX1,TS1}.svs, spatial/<patient>/ (Space Ranger outs), clinical/clinical.csv,
    compounds/library.csv (SMILES only).
    """
    for pid in PATIENTS:
        src = realdata / "dicom" / "sts_cropped" / pid
        for i, (part, sub) in enumerate((("CT", "image"), ("PET", "image"), ("CT", "mask"), ("PET", "mask"))):
            dst = site / "imaging" / pid / "study-1" / f"{i + 1}.000000-{part.lower()}-{sub}"
            dst.mkdir(parents=True)
            for j, f in enumerate(sorted((src / part / sub).glob("*.dcm"))):
                shutil.copy(f, dst / f"1-{j + 1:03d}.dcm")
    (site / "pathology").mkdir(parents=True)
    for kind in ("TS1", "DX1"):  # a frozen section beside the diagnostic slide: the DX slide is preferred
        shutil.copy(realdata / "wsi" / "CMU-1-Small-Region.svs", site / "pathology" / f"{PATIENTS[0]}-{kind}.svs")
    shutil.copytree(realdata / "spatial" / "visium_v1_subsample", site / "spatial" / PATIENTS[1] / "outs")
    (site / "clinical").mkdir(parents=True)
    (site / "clinical" / "clinical.csv").write_text(CLINICAL)
    (site / "compounds").mkdir(parents=True)
    (site / "compounds" / "library.csv").write_text(LIBRARY)
    return site
