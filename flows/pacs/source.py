"""PACS sources of a catalog: pulled into the store's raw area at the start of a run (each SOP instance
once), then handed on as ordinary `dicom` folder sources, so the same readers take them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flows.catalog.schema import Catalog, Source
from flows.pacs.pull import pull_dicomweb, pull_dimse
from flows.skipped import Skipped
from fusion.errors import PacsError


def raw_dir(store_root: str | Path, source: Source) -> Path:
    """Where a PACS source's instances land: STORE/raw/<source name>/<study>/<series>/<sop>.dcm."""
    return Path(store_root) / "raw" / source.name


def pull_source(source: Source, store_root: str | Path) -> tuple[Source, list[Skipped]]:
    """Pull one PACS source; returns it as a `dicom` folder source and skip records of failed studies."""
    out = raw_dir(store_root, source)
    r = source.remote
    try:
        if source.format == "dicomweb":
            report = pull_dicomweb(r["url"], out, r.get("patient"), r.get("study"))
        else:
            report = pull_dimse(r["host"], int(r["port"]), out, r.get("aet", "ORTHANC"), r.get("calling_aet", "FUSIONRX"),
                                r.get("patient"), r.get("study"))
        skipped = [Skipped(source.name, f"study {s.study_uid} (patient {s.patient_id})", s.error)
                   for s in report.failed]
    except PacsError as exc:  # the PACS could not even be searched: keep what an earlier run pulled
        skipped = [Skipped.of(source.name, r.get("url") or f"{r.get('host')}:{r.get('port')}", exc)]
    out.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(source, format="dicom", path=out, remote={}), skipped


def pull_remote_sources(catalog: Catalog, store_root: str | Path) -> tuple[Catalog, list[Skipped]]:
    """The catalog with every PACS source pulled and replaced by its local folder; skip records."""
    sources, skipped = dict(catalog.sources), []
    for name, src in catalog.sources.items():
        if src.format in ("dicomweb", "dimse"):
            sources[name], errs = pull_source(src, store_root)
            skipped += errs
    return dataclasses.replace(catalog, sources=sources), skipped
