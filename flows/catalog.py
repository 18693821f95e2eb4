"""The data catalog: a validated description of one cohort's sources (``data_catalog.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import CatalogError

# modality -> the formats FusionRx can read for it
MODALITY_FORMATS: dict[str, tuple[str, ...]] = {
    "ct": ("dicom_series",),
    "pet": ("dicom_series",),
    "wsi": ("openslide",),
    "spatial": ("visium_h5ad",),
    "expression": ("gdc_star_counts",),
    "mutations": ("gdc_maf",),
    "copy_number": ("gistic_gene_thresholded",),
    "clinical": ("gdc_clinical",),
    "compounds": ("compound_table", "sdf"),  # a compound_table path ending .sdf is read as SDF too
}
# which sources are folders with one entry per patient, which are single files
FOLDER_FORMATS = {"dicom_series", "openslide", "visium_h5ad", "gdc_star_counts"}
REQUIRED_FIELDS = ("modality", "format", "path")
OPTIONAL_FIELDS = ("pattern", "sample_sheet", "id_map", "description")
REQUIRED_MODALITIES = ("expression", "clinical")


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

    def patient_id(self, source_id: str) -> str:
        """Map a source-specific id to the cohort patient id (identity when unmapped)."""
        return self.id_map.get(source_id, source_id)


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: cohort name, the file it came from, its sources by name."""

    cohort: str
    file: Path
    sources: dict[str, Source]

    def by_modality(self, modality: str) -> Source | None:
        """The (first) source of a modality, or None when the cohort has none."""
        for source in self.sources.values():
            if source.modality == modality:
                return source
        return None


def _entry_error(file: Path, name: str, message: str) -> CatalogError:
    return CatalogError(f"{file}: source '{name}': {message}")


def _parse_source(file: Path, root: Path, name: str, raw: Any) -> Source:
    if not isinstance(raw, dict):
        raise _entry_error(file, name, f"expected a mapping of fields, got {type(raw).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in raw or raw[f] in (None, "")]
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
    path = (root / str(raw["path"])).resolve()
    if not path.exists():
        raise _entry_error(file, name, f"path '{raw['path']}' does not exist (resolved to {path})")
    if fmt in FOLDER_FORMATS and not path.is_dir():
        raise _entry_error(file, name, f"path '{raw['path']}' must be a folder for format '{fmt}'")
    if fmt not in FOLDER_FORMATS and not path.is_file():
        raise _entry_error(file, name, f"path '{raw['path']}' must be a file for format '{fmt}'")
    sample_sheet = None
    if fmt == "gdc_star_counts":
        if not raw.get("sample_sheet"):
            raise _entry_error(file, name, "format 'gdc_star_counts' needs a 'sample_sheet' (GDC sample sheet TSV)")
        sample_sheet = (root / str(raw["sample_sheet"])).resolve()
        if not sample_sheet.is_file():
            raise _entry_error(file, name, f"sample_sheet '{raw['sample_sheet']}' does not exist")
    id_map = raw.get("id_map") or {}
    if not isinstance(id_map, dict):
        raise _entry_error(file, name, "'id_map' must map source ids to patient ids")
    return Source(name=name, modality=modality, format=fmt, path=path,
                  pattern=raw.get("pattern"), sample_sheet=sample_sheet,
                  id_map={str(k): str(v) for k, v in id_map.items()})


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
    unknown_top = sorted(set(raw) - {"version", "cohort", "root", "sources", "description"})
    if unknown_top:
        raise CatalogError(f"{file}: unknown top-level field(s) {unknown_top}")
    root = (file.parent / str(raw.get("root", "."))).resolve()
    if not root.is_dir():
        raise CatalogError(f"{file}: root '{raw.get('root')}' is not a folder (resolved to {root})")
    sources = {str(n): _parse_source(file, root, str(n), entry) for n, entry in raw["sources"].items()}
    present = {s.modality for s in sources.values()}
    missing = [m for m in REQUIRED_MODALITIES if m not in present]
    if missing:
        raise CatalogError(f"{file}: the cohort needs source(s) for modality {missing}")
    return Catalog(cohort=str(raw["cohort"]), file=file, sources=sources)


def catalog_yaml(cohort: str, root: str, sources: dict[str, dict[str, Any]]) -> str:
    """Render a catalog as YAML text (used by the synthetic cohort generator)."""
    doc = {"version": 1, "cohort": cohort, "root": root, "sources": sources}
    return yaml.safe_dump(doc, sort_keys=False)
