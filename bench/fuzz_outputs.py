"""What the fuzz harness (bench/fuzz_cohort.py) checks besides the run's exit and its summary: which patient
each input file belongs to, what a door's reader returns for one file (is an unnamed damage harmless?),
whether a DICOM damage lies only in uncompressed pixel data (undetectable, see ``pixel_data_only``), and
whether the stored outputs of the patients no damage touched are identical to those of a clean run.

Compared per untouched patient (encoder-independent unless the encoder is the same in both runs):
radiology phenotypes (``imaging/radiology/<pid>/result.json``, ``imaging/phenotypes.parquet``), slide tiles
(``wsi/<pid>.h5``: coordinates and hematoxylin density; the features too when both files name the same
encoder weights SHA-256, i.e. a frozen encoder), the processed spatial sample (``spatial/<pid>/sample.h5ad``:
counts, clusters, tumour region, cellularity), tumour expression counts, copy-number calls and MAF rows.
Cohort-fitted outputs (cohort-trained encoders, the spatial pseudo-bulk PCA, fusion models) legitimately
change when a patient drops out and are not compared.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

PATIENT = re.compile(r"TCGA-FX-\d{4}")
# DICOM geometry and scaling a reader turns into physical values: damage there is not harmless
DICOM_VALUE_TAGS = ("RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagePositionPatient",
                    "ImageOrientationPatient", "SliceThickness", "Rows", "Columns", "BitsAllocated", "Units")
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def file_patients(root: Path) -> dict[str, str]:
    """Input file (relative to the cohort ``root``) -> patient id, for the GDC files from the sample sheets'
    'File Name' and 'Case ID' columns (their names carry no barcode)."""
    out: dict[str, str] = {}
    for sheet in root.glob("omics/*sample_sheet*.tsv"):
        table = pd.read_csv(sheet, sep="\t", dtype=str)
        by_name = dict(zip(table["File Name"], table["Case ID"]))
        for p in (root / "omics").rglob("*"):
            if p.is_file() and p.name in by_name:
                out[str(p.relative_to(root))] = by_name[p.name]
    return out


def patient_of(rel: str, gdc: dict[str, str]) -> str | None:
    """The patient a cohort file belongs to: its TCGA-FX barcode in the path, else the sample sheet's case."""
    m = PATIENT.search(rel)
    return m.group(0) if m else gdc.get(rel)


def _add(h: hashlib._Hash, a: object) -> None:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.dtype, a.shape)).encode())
    h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())


def reader_digest(door: str, path: str) -> str:
    """SHA-256 of what the door's reader returns for one file (run isolated: the reader may crash)."""
    h = hashlib.sha256()
    if door == "dicom":
        from imaging.dicom_frames import read_image, stored_pixels

        ds = read_image(path, fast=False)
        _add(h, stored_pixels(ds, Path(path)))
        h.update(repr([str(ds.get(t)) for t in DICOM_VALUE_TAGS]).encode())
    elif door == "slide":
        from imaging.slide import open_slide

        s = open_slide(path)
        for lvl, (w, hh) in enumerate(s.level_dimensions):
            _add(h, s.read_region((0, 0), lvl, (w, hh)))
    elif door == "maf":
        from omics.gdc import read_maf

        _add(h, read_maf(path).to_numpy())
    elif door == "copy_number":
        from omics.gdc_download import read_gene_level_copy_number

        series = read_gene_level_copy_number(path)
        _add(h, series.to_numpy())
        _add(h, series.index.to_numpy())
    elif door == "star_counts":
        from omics.gdc import read_star_counts

        _add(h, read_star_counts(path).to_numpy())
    else:  # h5ad, spaceranger
        from omics.spatial import read_spatial

        a = read_spatial(Path(path).parent if door == "spaceranger" else path)
        _add(h, a.X.toarray())
        _add(h, a.obsm["spatial"])
    return h.hexdigest()


def isolated_digest(door: str, path: Path) -> tuple[bool, str]:
    """(read without error, digest or the error's text) of the door's reader on ``path``, in a worker."""
    from flows.store.isolate import run_isolated
    from fusion.errors import FusionRxError

    try:
        return True, run_isolated(reader_digest, door, str(path), what=str(path), error=FusionRxError,
                                  timeout_s=300, preload=("omics.spatial", "imaging.dicom_frames"))
    except Exception as exc:  # noqa: BLE001 - any reader failure is an answer here
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"


def pixel_data_only(pristine: Path, start: int, length: int) -> bool:
    """True when bytes [start, start + length) of the pristine DICOM file lie inside the value of an
    uncompressed PixelData element: DICOM carries no checksum, so such damage reads as other, valid pixel
    values and no reader can detect it (counted apart as 'undetectable', not as a finding)."""
    import pydicom

    try:
        ds = pydicom.dcmread(pristine, stop_before_pixels=True)
        syntax = str(ds.file_meta.TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - not a readable DICOM file: not this case
        return False
    data = pristine.read_bytes()
    tag = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) little endian: pixel data comes last
    if syntax not in UNCOMPRESSED or tag < 0:
        return False
    explicit = data[tag + 4:tag + 6] in (b"OW", b"OB")
    value = tag + (12 if explicit else 8)
    size = int.from_bytes(data[value - 4:value], "little")
    return value <= start and start + length <= value + size


def _equal(a: object, b: object) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _compare_radiology(clean: Path, run: Path, pid: str) -> list[str]:
    out = []
    a, b = clean / "imaging/radiology" / pid / "result.json", run / "imaging/radiology" / pid / "result.json"
    if a.is_file():
        if not b.is_file():
            return [f"{pid}: radiology result missing"]
        if json.loads(a.read_text())["phenotypes"] != json.loads(b.read_text())["phenotypes"]:
            out.append(f"{pid}: radiology phenotypes differ")
    pa, pb = clean / "imaging/phenotypes.parquet", run / "imaging/phenotypes.parquet"
    if pa.is_file() and pb.is_file():
        ta, tb = pd.read_parquet(pa), pd.read_parquet(pb)
        if pid in ta.index and (pid not in tb.index or not _equal(ta.loc[pid].to_numpy(float), tb.loc[pid].to_numpy(float))):
            out.append(f"{pid}: imaging/phenotypes.parquet row differs")
    return out


def _compare_slide(clean: Path, run: Path, pid: str, notes: list[str]) -> list[str]:
    import h5py

    a, b = clean / "wsi" / f"{pid}.h5", run / "wsi" / f"{pid}.h5"
    if not a.is_file():
        return []
    if not b.is_file():
        return [f"{pid}: slide features missing"]
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = ["coords", "coords_level0", "hematoxylin_density"]
        if fa.attrs.get("weights_sha256") == fb.attrs.get("weights_sha256"):
            names.append("features")  # the same encoder (frozen weights): features must be identical
        else:
            notes.append(f"{pid}: slide features not compared (the encoder differs: cohort-trained)")
        return [f"{pid}: wsi/{pid}.h5 {n} differs" for n in names
                if n in fa and (n not in fb or not _equal(fa[n][()], fb[n][()]))]


def _compare_spatial(clean: Path, run: Path, pid: str) -> list[str]:
    import anndata as ad

    a, b = clean / "spatial" / pid / "sample.h5ad", run / "spatial" / pid / "sample.h5ad"
    if not a.is_file():
        return []
    if not b.is_file():
        return [f"{pid}: spatial sample missing"]
    sa, sb = ad.read_h5ad(a), ad.read_h5ad(b)
    if list(sa.obs_names) != list(sb.obs_names) or list(sa.var_names) != list(sb.var_names):
        return [f"{pid}: spatial sample spots or genes differ"]
    diff = [] if _equal(sa.layers["counts"].toarray(), sb.layers["counts"].toarray()) else ["counts"]
    diff += [c for c in sa.obs.columns if c not in sb.obs or not _equal(sa.obs[c].astype(str), sb.obs[c].astype(str))]
    return [f"{pid}: spatial/{pid} {', '.join(diff)} differ"] if diff else []


def _compare_omics(clean: Path, run: Path, pids: list[str]) -> list[str]:
    import anndata as ad

    from flows.store.artifacts import load_pickle

    out = []
    ea, eb = clean / "omics/tumour_expression.h5ad", run / "omics/tumour_expression.h5ad"
    if ea.is_file() and eb.is_file():
        ta, tb = ad.read_h5ad(ea), ad.read_h5ad(eb)
        for pid in pids:
            if pid in ta.obs_names and (pid not in tb.obs_names or list(ta.var_names) != list(tb.var_names)
                                        or not _equal(ta[pid].layers["counts"], tb[pid].layers["counts"])):
                out.append(f"{pid}: tumour expression counts differ")
    ba, bb = clean / "omics/bulk_omics.pkl", run / "omics/bulk_omics.pkl"
    if ba.is_file() and bb.is_file():
        xa, xb = load_pickle(ba), load_pickle(bb)
        for pid in pids:
            if xa.copy_number is not None and pid in xa.copy_number.columns and (
                    xb.copy_number is None or pid not in xb.copy_number.columns
                    or not _equal(xa.copy_number[pid], xb.copy_number[pid].reindex(xa.copy_number.index))):
                out.append(f"{pid}: copy-number calls differ")
            if xa.maf is not None and xb.maf is not None:
                key = ["Hugo_Symbol", "Start_Position", "Variant_Classification"]
                ma = xa.maf.loc[xa.maf["patient_id"] == pid, key].sort_values(key).to_numpy()
                mb = xb.maf.loc[xb.maf["patient_id"] == pid, key].sort_values(key).to_numpy()
                if not _equal(ma.astype(str), mb.astype(str)):
                    out.append(f"{pid}: MAF rows differ")
    return out


def untouched_changes(clean: Path, run: Path, pids: list[str]) -> tuple[list[str], list[str]]:
    """(what differs between the clean run's store and this run's for the untouched ``pids``, notes on
    what was not compared and why)."""
    notes: list[str] = []
    changes: list[str] = []
    for pid in pids:
        changes += _compare_radiology(clean, run, pid)
        changes += _compare_slide(clean, run, pid, notes)
        changes += _compare_spatial(clean, run, pid)
    changes += _compare_omics(clean, run, pids)
    return changes, notes
