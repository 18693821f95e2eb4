"""`fusionrx scan`: walk a folder of any nesting and recognise what is there by content, not by name.

Result: ``{"patients": {PATIENT_ID: {MODALITY: [ITEM, ...]}}, "cohort": {KIND: [ITEM, ...]},
"problems": [{"path", "error"}], "unrecognised": [path, ...]}``.

- DICOM files (any name, no extension needed) are grouped into series from their headers; a
  patient's ``ct``/``pet``/``mr``/``seg`` items carry ``path`` (common parent of the series' files),
  ``series_uid``, ``study_uid``, ``frame_of_reference_uid``, ``modality``, ``n_files``.
- Slides (``openslide.OpenSlide.detect_format``), Space Ranger folders, spatial h5ad files and
  CLAM-style tile-feature HDF5 files are per patient (id from the file: TCGA barcode prefix, h5ad
  ``uns['patient_id']``, else the file or folder name).
- GDC files listed in a sample sheet found in the scan are per patient (``expression``,
  ``mutations``, ``copy_number``) through the sheet's Case ID; cohort-wide tables (a merged MAF,
  GISTIC, clinical.tsv, sample sheets, compound and feature tables) go under ``cohort``: splitting
  them per patient would copy one file's path into hundreds of entries and say nothing new.
A file that looks like a known format but cannot be read is a ``problems`` entry; nothing raises.

Every file other than DICOM is recognised in a worker process (``flows.store.isolate``), a batch of
``SNIFF_BATCH`` files per worker: HDF5, OpenSlide, libtiff and Arrow open files in native code, and a
damaged file that kills its reader (a segfault, an abort, the memory killer) becomes a ``problems`` entry
naming it and how the reader died, never the end of the scan. A batch whose worker dies is read again one
file per worker to find the file. DICOM files are only told apart by their first bytes here (their headers
are indexed after the walk, in Python).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from flows.catalog.formats import FORMATS, HDF5_SIGNATURE, PARQUET_SIGNATURE, sniff_table, text_head
from imaging.dicom_frames import looks_like_dicom, read_header
from imaging.dicom_index import SeriesInfo, index_dicom

DICOM_MODALITY_KEYS = {"CT": "ct", "PT": "pet", "MR": "mr", "RTSTRUCT": "seg", "SEG": "seg", "SM": "wsi"}
# file names that promise a format: when the content is not it, that is a problem, not just unknown
_PROMISING_SUFFIXES = (".dcm", ".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".h5ad", ".h5",
                       ".maf", ".maf.gz", ".parquet")
_TCGA = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)
SNIFF_BATCH = 64  # non-DICOM files recognised per worker process
# the modules a sniffing worker needs, imported once in the fork server
SNIFF_PRELOAD = ("flows.catalog.scan", "imaging.slide", "tifffile", "openslide", "h5py", "pyarrow.parquet", "pandas",
                 "omics.clinical")


_SLIDE_SUFFIX = re.compile(r"[-_.](DX|TS|BS|MS)\d*$", re.IGNORECASE)


def _patient_from_name(name: str) -> str:
    """A patient id from a file or folder name: the TCGA case barcode, else the name less a slide-type
    suffix (``STS_001-DX1`` -> ``STS_001``)."""
    m = _TCGA.match(name)
    return m.group(0).upper() if m else _SLIDE_SUFFIX.sub("", name)


def slide_preference(path: str) -> int:
    """Sort key of a patient's slides: diagnostic (DX, FFPE) first, then others, frozen sections (TS) last."""
    stem = Path(path).name.upper()
    return 0 if re.search(r"[-_.]DX\d*([-_.]|$)", stem) else 2 if re.search(r"[-_.](TS|BS)\d*([-_.]|$)", stem) else 1


def _is_spaceranger(folder: Path) -> dict | None:
    """Facts about a Space Ranger output folder (matrix h5 + spatial/tissue_positions*), else None."""
    matrix = folder / "filtered_feature_bc_matrix.h5"
    spatial = folder / "spatial"
    if not (matrix.is_file() and spatial.is_dir()):
        return None
    for name, version in (("tissue_positions.parquet", "parquet"), ("tissue_positions.csv", "v2 (csv, header)"),
                          ("tissue_positions_list.csv", "v1 (csv, no header)")):
        if (spatial / name).is_file():
            return {"positions": f"spatial/{name}", "positions_layout": version,
                    "scalefactors": (spatial / "scalefactors_json.json").is_file()}
    return None


def _h5_facts(path: Path) -> tuple[str, dict] | None:
    """What an HDF5 file holds: spatial AnnData, plain AnnData, CLAM-style tile features, 10x matrix."""
    import h5py

    with h5py.File(path, "r") as f:
        keys = set(f.keys())
        if {"obs", "var", "X"} <= keys:
            spatial = "obsm" in keys and "spatial" in f["obsm"]
            pid = ""
            if "uns" in keys and "patient_id" in f["uns"]:
                raw = f["uns"]["patient_id"][()]
                pid = raw.decode() if isinstance(raw, bytes) else str(raw)
            index_key = f["obs"].attrs.get("_index", "_index")
            n_obs = int(f["obs"][index_key].shape[0]) if index_key in f["obs"] else None
            return ("spatial_h5ad" if spatial else "h5ad"), {"patient_id": pid, "n_obs": n_obs}
        if {"features", "coords"} <= keys:
            feats = f["features"]
            return "tile_features_h5", {"n_tiles": int(feats.shape[-2]), "feature_dim": int(feats.shape[-1])}
        if "matrix" in keys:
            return "10x_matrix_h5", {}
    return None


def _nifti_dims(path: Path, head: bytes) -> list[int] | None:
    """Image dimensions of a NIfTI-1 file (plain or gzipped header: sizeof_hdr 348, magic n+1/ni1)."""
    import gzip
    import struct

    raw = head
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read(352)
        except (OSError, EOFError):
            return None
    if len(raw) < 348 or raw[344:347] not in (b"n+1", b"ni1"):
        return None
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", raw[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", raw[40:56])
            return list(dim[1:1 + max(0, min(dim[0], 7))])
    return None


def dicom_item(series: SeriesInfo) -> dict[str, Any]:
    """A scan item for one indexed series; PET items carry Units and Manufacturer from the first header."""
    item = {"path": str(series.path), "format": "dicom", **{k: v for k, v in series.to_dict().items()
                                                             if k not in ("files", "duplicates", "path")}}
    if series.duplicates:
        item["duplicates"] = [str(p) for p in series.duplicates]  # the same SOP instances copied elsewhere
    if series.modality in ("PT", "CT", "MR"):
        try:
            ds = read_header(series.files[0], ["Units", "Manufacturer"])
        except Exception:  # the index read this file already; a second failure only loses two labels
            return item
        item.update({k: str(ds.get(t)) for k, t in (("units", "Units"), ("manufacturer", "Manufacturer")) if ds.get(t)})
    return item


class _Scan:
    def __init__(self, root: Path):
        self.root = root
        self.patients: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.cohort: dict[str, list[dict]] = defaultdict(list)
        self.problems: list[dict[str, str]] = []
        self.unrecognised: list[str] = []
        self.dicom: list[Path] = []
        self.gdc_files: list[tuple[str, Path, dict]] = []   # (format, path, facts) awaiting a sample sheet

    def problem(self, path: Path, error: str) -> None:
        self.problems.append({"path": str(path), "error": error})

    def add(self, pid: str, modality: str, item: dict) -> None:
        self.patients[pid][modality].append(item)

    # ----------------------------------------------------------------------------- per file
    def _head(self, path: Path) -> bytes | None:
        """The first 64 KiB of a file (None, with a problem entry, when it cannot be read)."""
        try:
            with open(path, "rb") as f:
                return f.read(65536)
        except OSError as exc:
            self.problem(path, f"cannot read: {exc}")
            return None

    def is_dicom(self, path: Path) -> bool | None:
        """True (and listed for the header index) for a DICOM file, told by its first bytes only; None
        when the file cannot be read (a problem entry)."""
        head = self._head(path)
        if head is None:
            return None
        try:
            dicom = head[128:132] == b"DICM" or looks_like_dicom(path)
        except Exception as exc:  # noqa: BLE001 - one unreadable file is a problem entry, never a crash
            self.problem(path, f"{type(exc).__name__}: {exc}")
            return None
        if dicom:
            self.dicom.append(path)  # grouped into series by header index once every file is seen
        return dicom

    def file(self, path: Path) -> None:
        """Recognise one file by content (any format, DICOM included) and record what it is."""
        head = self._head(path)
        if head is None:
            return
        name = path.name.lower()
        try:
            if head[128:132] == b"DICM" or looks_like_dicom(path):
                self.dicom.append(path)  # grouped into series by header index once every file is seen
            elif head.startswith(HDF5_SIGNATURE):
                self._h5(path)
            elif self._slide(path):
                pass
            elif _nifti_dims(path, head) is not None:
                self.cohort["nifti"].append({"path": str(path), "format": "nifti", "shape": _nifti_dims(path, head)})
            elif head.startswith(PARQUET_SIGNATURE):
                self._parquet(path)
            else:
                lines = text_head(path, head)
                found = sniff_table(lines) if lines else None
                if found is not None:
                    self._table(path, *found)
                elif name.endswith(_PROMISING_SUFFIXES):
                    self.problem(path, f"named like a known format ({path.suffix}) but its content is not "
                                       "recognised (not DICOM, not a slide OpenSlide can open, not a known table)")
                else:
                    self.unrecognised.append(str(path))
        except Exception as exc:  # one unreadable file is a problem entry, never a crash
            self.problem(path, f"{type(exc).__name__}: {exc}")

    def _slide(self, path: Path) -> bool:
        """A slide, recognised as the slide reader recognises it (OpenSlide's vendors, and TIFFs such as
        QPTIFF that only tifffile reads); a slide whose resolution is implausible is a problem, never tiled."""
        from fusion.errors import SlideError
        from imaging.slide import PLAIN_TIFF, detect_slide_format, open_slide, slide_mpp

        vendor = detect_slide_format(path)
        if vendor is None:
            return False
        try:
            slide = open_slide(path)
        except SlideError:
            if vendor == PLAIN_TIFF:
                return False  # a TIFF that is no slide (e.g. a mask or a photo): the next sniffer decides
            raise
        with slide:
            try:
                mpp = slide_mpp(slide)
            except SlideError as exc:
                self.problem(path, f"SlideError: {exc}")
                return True
            item = {"path": str(path), "format": "openslide", "vendor": vendor,
                    "dimensions": list(slide.dimensions), "levels": slide.level_count, "mpp": float(mpp)}
        self.add(_patient_from_name(path.stem), "wsi", item)
        return True

    def _h5(self, path: Path) -> None:
        kind = _h5_facts(path)
        if kind is None:
            self.problem(path, "HDF5 file holds neither AnnData (obs/var/X), tile features (features + coords) "
                               "nor a 10x matrix")
            return
        fmt, facts = kind
        if fmt == "spatial_h5ad":
            self.add(facts.pop("patient_id") or _patient_from_name(path.stem), "spatial",
                     {"path": str(path), "format": "visium_h5ad", **facts})
        elif fmt == "tile_features_h5":
            self.add(_patient_from_name(path.stem), "tile_features", {"path": str(path), "format": fmt, **facts})
        elif fmt == "h5ad":
            self.cohort["h5ad"].append({"path": str(path), **facts})
        else:
            self.problem(path, "a 10x feature-barcode matrix outside a Space Ranger folder (no spatial/ "
                               "tissue positions beside it)")

    def _parquet(self, path: Path) -> None:
        import pyarrow.parquet as pq

        cols = pq.read_schema(path).names
        lines = [",".join(cols)]
        found = sniff_table(lines + [",".join("0" for _ in cols)])
        if found is None:
            self.unrecognised.append(str(path))
        else:
            self._table(path, *found)

    def _table(self, path: Path, fmt: str, facts: dict) -> None:
        item = {"path": str(path), "format": fmt, **facts}
        if fmt in ("gdc_star_counts", "gdc_maf", "gdc_gene_level_copy_number"):
            self.gdc_files.append((fmt, path, item))
            return
        key = {"gdc_sample_sheet": "sample_sheet", "gistic_gene_thresholded": "copy_number",
               "gdc_clinical": "clinical", "clinical_table": "clinical", "compound_table": "compounds",
               "feature_table": "features"}[fmt]
        self.cohort[key].append(item)
        if fmt == "clinical_table":  # the sheet's patients, so that the scan reports which ids join
            from omics.clinical import read_clinical_table

            for pid in read_clinical_table(path).patients:
                self.add(str(pid), "clinical", {"path": str(path), "format": fmt})

    def fragment(self) -> dict[str, Any]:
        """What this scan found, as plain picklable data (a worker's answer to ``merge``)."""
        return {"patients": {p: dict(m) for p, m in self.patients.items()}, "cohort": dict(self.cohort),
                "problems": self.problems, "unrecognised": self.unrecognised, "dicom": self.dicom,
                "gdc_files": self.gdc_files}

    def merge(self, part: dict[str, Any]) -> None:
        """Add a worker's ``fragment`` to this scan, after what is already here."""
        for pid, mods in part["patients"].items():
            for modality, items in mods.items():
                self.patients[pid][modality].extend(items)
        for kind, items in part["cohort"].items():
            self.cohort[kind].extend(items)
        self.problems += part["problems"]
        self.unrecognised += part["unrecognised"]
        self.dicom += part["dicom"]
        self.gdc_files += part["gdc_files"]

    def sniff(self, paths: list[Path], isolate: bool = True) -> None:
        """Recognise ``paths`` (in order), ``SNIFF_BATCH`` per worker process with ``isolate``; a batch whose
        worker dies is read again one file per worker, and a file that kills its own worker is a problem."""
        if not isolate:
            for path in paths:
                self.file(path)
            return
        from flows.store.isolate import run_isolated
        from fusion.errors import CatalogError

        for start in range(0, len(paths), SNIFF_BATCH):
            batch = [str(p) for p in paths[start:start + SNIFF_BATCH]]
            try:
                self.merge(run_isolated(sniff_files, str(self.root), batch, what=f"{len(batch)} files from "
                                        f"{batch[0]}", error=CatalogError, preload=SNIFF_PRELOAD))
                continue
            except CatalogError:  # a reader died: find the file, one worker each
                pass
            for path in batch:
                try:
                    self.merge(run_isolated(sniff_files, str(self.root), [path], what=path, error=CatalogError,
                                            preload=SNIFF_PRELOAD))
                except CatalogError as exc:
                    self.problem(Path(path), f"CatalogError: {exc}")

    # ------------------------------------------------------------------------- cross-file
    def group_dicom(self) -> None:
        index = index_dicom(self.dicom) if self.dicom else []
        self.problems += [{"path": p, "error": e} for p, e in getattr(index, "problems", [])]
        for series in index:
            item = dicom_item(series)
            key = DICOM_MODALITY_KEYS.get(series.modality, series.modality.lower())
            self.add(series.patient_id or "UNKNOWN", key, item)

    def link_gdc(self) -> None:
        """Attach counts / MAF / gene-level CN files to patients through the scan's sample sheets."""
        from omics.gdc import read_sample_sheet

        by_file: dict[tuple[str, str], tuple[str, str]] = {}
        for sheet in self.cohort.get("sample_sheet", []):
            try:
                df = read_sample_sheet(sheet["path"])
            except Exception as exc:
                self.problem(Path(sheet["path"]), f"{type(exc).__name__}: {exc}")
                continue
            for fid, fname, case, sample in df[["File ID", "File Name", "Case ID", "Sample ID"]].itertuples(index=False):
                entry = (str(case).split(",")[0].strip(), str(sample))
                by_file[("id", str(fid))] = entry
                by_file[("name", str(fname))] = entry
        modality = {"gdc_star_counts": "expression", "gdc_maf": "mutations", "gdc_gene_level_copy_number": "copy_number"}
        for fmt, path, item in self.gdc_files:
            hit = by_file.get(("id", path.parent.name)) or by_file.get(("name", path.name))
            if hit is None:
                if fmt == "gdc_star_counts":
                    self.problem(path, "STAR counts hold no sample id and no sample sheet in the scan lists "
                                       "this file (by File ID folder or File Name)")
                else:
                    self.cohort[modality[fmt]].append(item)
                continue
            self.add(hit[0], modality[fmt], {**item, "sample_id": hit[1]})


def sniff_files(root: str, paths: list[str]) -> dict[str, Any]:
    """What the scan finds in ``paths`` under ``root``, as a ``_Scan.fragment`` (the body of a sniffing
    worker: module-level so that the worker imports it by name)."""
    s = _Scan(Path(root))
    for path in paths:
        s.file(Path(path))
    return s.fragment()


def scan(root: str | Path, isolate: bool = True) -> dict[str, Any]:
    """Recognise every file under ``root`` by content; see the module docstring for the result. With
    ``isolate`` (the default) every file but DICOM is read in a worker process (``SNIFF_BATCH`` a worker)."""
    root = Path(root).resolve()
    s = _Scan(root)
    if not root.is_dir():
        s.problem(root, "not a folder")
    pending: list[Path] = []  # non-DICOM files in walk order, recognised in batches
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .git, .cache, partial downloads
        here = Path(dirpath)
        sr = _is_spaceranger(here)
        if sr is not None:
            s.sniff(pending, isolate)  # what came before keeps its place in the patient's lists
            pending = []
            name = here.parent.name if here.name == "outs" else here.name  # Space Ranger writes <sample>/outs
            s.add(_patient_from_name(name), "spatial", {"path": str(here), "format": "spaceranger", **sr})
            dirnames[:] = []  # the folder is one item; its matrix and images are not separate finds
            continue
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".partial", ".parcel")):
                continue
            if s.is_dicom(here / name) is False:
                pending.append(here / name)
    s.sniff(pending, isolate)
    s.group_dicom()
    s.link_gdc()
    for mods in s.patients.values():
        if "wsi" in mods:
            mods["wsi"].sort(key=lambda i: slide_preference(i["path"]))
    patients = {pid: {m: items for m, items in sorted(mods.items())} for pid, mods in sorted(s.patients.items())}
    return {"root": str(root), "patients": patients, "cohort": dict(s.cohort), "problems": s.problems,
            "unrecognised": s.unrecognised, "id_joins": id_joins(patients)}


def id_joins(patients: dict[str, dict[str, list]]) -> dict[str, list[str]]:
    """Which patient ids joined across modalities and which were found in one modality only (ids that
    differ between PACS, pathology and the clinical sheet need the catalog's ``id_map``)."""
    joined = sorted(p for p, mods in patients.items() if len({m for m in mods if m != "seg"}) > 1)
    alone = sorted(f"{p} ({next(iter(mods))})" for p, mods in patients.items()
                   if len({m for m in mods if m != "seg"}) == 1)
    return {"joined": joined, "one_modality_only": alone}


__all__ = ["scan", "FORMATS"]
