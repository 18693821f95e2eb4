"""The data catalog: a validated description of one cohort's sources (``data_catalog.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.catalog.formats import FORMATS, modality_formats
from fusion.errors import CatalogError

# modality -> the formats FusionRx can read for it (from the format table `scan` shares)
MODALITY_FORMATS: dict[str, tuple[str, ...]] = modality_formats()
# which sources are folders (one entry per patient, or a gdc-client download), which are single files
FOLDER_FORMATS = {f.name for f in FORMATS.values() if f.kind == "folder"}
REQUIRED_FIELDS = ("modality", "format", "path")
# files: explicit per-patient item lists {PATIENT_ID: [path, ...]} (paths relative to root), as
# `fusionrx scan --out` writes them; id_column: the patient id column of a feature table
OPTIONAL_FIELDS = ("pattern", "sample_sheet", "id_map", "description", "files", "id_column",
                   "url", "host", "port", "aet", "calling_aet", "patient", "study")
# PACS sources (formats of kind "remote"): no path; what to query (credentials only from the environment)
REMOTE_FIELDS = {"dicomweb": ("url",), "dimse": ("host", "port")}


@dataclass(frozen=True)
class Source:
    """One catalog entry: where a modality's files are and how to read them."""

    name: str
    modality: str
    format: str
    path: Path
    pattern: str | None = None
    sample_sheet: Path | None = None
    id_map: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    id_column: str | None = None
    remote: dict[str, Any] = field(default_factory=dict)  # PACS query of a dicomweb / dimse source

    def patient_id(self, source_id: str) -> str:
        """Map a source-specific id to the cohort patient id (identity when unmapped)."""
        return self.id_map.get(source_id, source_id)

    def items(self) -> dict[str, Path]:
        """The explicit per-patient items of the source (first path per patient; empty when none)."""
        return {self.patient_id(pid): paths[0] for pid, paths in self.files.items() if paths}


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: cohort name, the file it came from, its sources by name."""

    cohort: str
    file: Path
    sources: dict[str, Source]
    # files `fusionrx scan` found damaged or unreadable (absolute path, reason): never catalogued, so the run
    # would not see them; it reports them among its skipped inputs
    scan_problems: tuple[tuple[str, str], ...] = ()

    def by_modality(self, modality: str) -> Source | None:
        """The (first) source of a modality, or None when the cohort has none."""
        for source in self.sources.values():
            if source.modality == modality:
                return source
        return None

    def all_of(self, modality: str) -> list[Source]:
        """Every source of a modality (e.g. several precomputed feature sources), in catalog order."""
        return [s for s in self.sources.values() if s.modality == modality]


def _entry_error(file: Path, name: str, message: str) -> CatalogError:
    return CatalogError(f"{file}: source '{name}': {message}")


def _parse_source(file: Path, root: Path, name: str, raw: Any) -> Source:
    if not isinstance(raw, dict):
        raise _entry_error(file, name, f"expected a mapping of fields, got {type(raw).__name__}")
    if any(k in raw for k in ("user", "username", "password", "token")):
        raise _entry_error(file, name, "credentials never go in a catalog; set FUSIONRX_DICOMWEB_USER/PASSWORD "
                           "or FUSIONRX_DICOMWEB_TOKEN in the environment")
    remote_format = str(raw.get("format")) in REMOTE_FIELDS
    required = [f for f in REQUIRED_FIELDS if not (remote_format and f == "path")]
    missing = [f for f in required if f not in raw or raw[f] in (None, "")]
    if missing:
        raise _entry_error(file, name, f"missing required field(s) {missing}")
    unknown = sorted(set(raw) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _entry_error(file, name, f"unknown field(s) {unknown}; allowed: "
                           f"{sorted(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    modality, fmt = str(raw["modality"]), str(raw["format"])
    if modality not in MODALITY_FORMATS:
        raise _entry_error(file, name, f"unknown modality '{modality}'; known: {sorted(MODALITY_FORMATS)}")
    if fmt not in MODALITY_FORMATS[modality]:
        raise _entry_error(file, name, f"format '{fmt}' is not readable for modality '{modality}'; "
                           f"expected one of {list(MODALITY_FORMATS[modality])}")
    if remote_format:
        return _parse_remote(file, name, modality, fmt, raw)
    path = (root / str(raw["path"])).resolve()
    if not path.exists():
        raise _entry_error(file, name, f"path '{raw['path']}' does not exist (resolved to {path})")
    if fmt in FOLDER_FORMATS and not path.is_dir():
        raise _entry_error(file, name, f"path '{raw['path']}' must be a folder for format '{fmt}'")
    if fmt not in FOLDER_FORMATS and not path.is_file():
        raise _entry_error(file, name, f"path '{raw['path']}' must be a file for format '{fmt}'")
    sample_sheet = None
    if FORMATS[fmt].needs_sample_sheet:
        if not raw.get("sample_sheet"):
            raise _entry_error(file, name, f"format '{fmt}' needs a 'sample_sheet' (GDC sample sheet TSV)")
        sample_sheet = (root / str(raw["sample_sheet"])).resolve()
        if not sample_sheet.is_file():
            raise _entry_error(file, name, f"sample_sheet '{raw['sample_sheet']}' does not exist")
    id_map = raw.get("id_map") or {}
    if not isinstance(id_map, dict):
        raise _entry_error(file, name, "'id_map' must map source ids to patient ids")
    files: dict[str, tuple[Path, ...]] = {}
    raw_files = raw.get("files") or {}
    if not isinstance(raw_files, dict):
        raise _entry_error(file, name, "'files' must map patient ids to lists of paths")
    for pid, paths in raw_files.items():
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not paths:
            raise _entry_error(file, name, f"'files' of patient '{pid}' must be a non-empty list of paths")
        resolved = tuple((root / str(p)).resolve() for p in paths)
        for p, r in zip(paths, resolved):
            if not r.exists():
                raise _entry_error(file, name, f"file '{p}' of patient '{pid}' does not exist (resolved to {r})")
        files[str(pid)] = resolved
    return Source(name=name, modality=modality, format=fmt, path=path,
                  pattern=raw.get("pattern"), sample_sheet=sample_sheet,
                  id_map={str(k): str(v) for k, v in id_map.items()}, files=files,
                  id_column=str(raw["id_column"]) if raw.get("id_column") else None)


def _parse_remote(file: Path, name: str, modality: str, fmt: str, raw: dict) -> Source:
    """A PACS source: the fields its query needs, checked; pulled into the store at run time."""
    absent = [f for f in REMOTE_FIELDS[fmt] if raw.get(f) in (None, "")]
    if absent:
        raise _entry_error(file, name, f"format '{fmt}' needs field(s) {absent}")
    if fmt == "dimse" and not str(raw["port"]).isdigit():
        raise _entry_error(file, name, f"port must be a number, found {raw['port']!r}")
    keys = ("url", "host", "port", "aet", "calling_aet", "patient", "study")
    remote = {k: raw[k] for k in keys if raw.get(k) not in (None, "")}
    return Source(name=name, modality=modality, format=fmt, path=Path(), remote=remote,
                  id_map={str(k): str(v) for k, v in (raw.get("id_map") or {}).items()})


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a data catalog YAML; raise CatalogError naming the entry at fault."""
    file = Path(path).resolve()
    if not file.is_file():
        raise CatalogError(f"{file}: catalog file does not exist")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{file}: expected a mapping with 'cohort' and 'sources'")
    for key in ("version", "cohort", "sources"):
        if key not in raw:
            raise CatalogError(f"{file}: missing top-level field '{key}'")
    if raw["version"] != 1:
        raise CatalogError(f"{file}: unsupported catalog version {raw['version']!r}; expected 1")
    if not isinstance(raw["sources"], dict) or not raw["sources"]:
        raise CatalogError(f"{file}: 'sources' must be a non-empty mapping of name -> entry")
    unknown_top = sorted(set(raw) - {"version", "cohort", "root", "sources", "description", "scan_problems"})
    if unknown_top:
        raise CatalogError(f"{file}: unknown top-level field(s) {unknown_top}")
    root = (file.parent / str(raw.get("root", "."))).resolve()
    if not root.is_dir():
        raise CatalogError(f"{file}: root '{raw.get('root')}' is not a folder (resolved to {root})")
    sources = {str(n): _parse_source(file, root, str(n), entry) for n, entry in raw["sources"].items()}
    tile_feats = [s.name for s in sources.values() if s.format == "tile_features_h5"]
    slides = [s.name for s in sources.values() if s.modality == "wsi"]
    if tile_feats and slides:
        raise CatalogError(f"{file}: source(s) {tile_feats} (tile_features_h5) and {slides} (wsi) both give the "
                           "slide bags; keep one")
    return Catalog(cohort=str(raw["cohort"]), file=file, sources=sources,
                   scan_problems=_scan_problems(file, root, raw.get("scan_problems")))


def _scan_problems(file: Path, root: Path, raw: Any) -> tuple[tuple[str, str], ...]:
    """``scan_problems: [{path, error}]`` (paths relative to the root) as (absolute path, error) pairs."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, dict) and {"path", "error"} <= set(p) for p in raw):
        raise CatalogError(f"{file}: 'scan_problems' must be a list of {{path, error}} entries")
    return tuple((str((root / str(p["path"])).resolve()), str(p["error"])) for p in raw)


def catalog_yaml(cohort: str, root: str, sources: dict[str, dict[str, Any]],
                 scan_problems: list[dict[str, str]] | None = None) -> str:
    """Render a catalog as YAML text (used by the synthetic cohort generator and `fusionrx scan`)."""
    doc = {"version": 1, "cohort": cohort, "root": root, "sources": sources}
    if scan_problems:
        doc["scan_problems"] = scan_problems
    return yaml.safe_dump(doc, sort_keys=False)
