"""A scan result -> a data catalog that `fusionrx run` accepts (sources from the shared format table)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flows.catalog.schema import catalog_yaml


def _common(paths: list[str]) -> Path:
    return Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent


def _rel(path: str | Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path), root)).as_posix()


def _per_patient(result: dict, modality: str, fmt: str | None = None) -> dict[str, list[dict]]:
    out = {}
    for pid, mods in result["patients"].items():
        items = [i for i in mods.get(modality, []) if fmt is None or i.get("format") == fmt]
        if items:
            out[pid] = items
    return out


def catalog_sources(result: dict[str, Any]) -> tuple[dict[str, dict], list[dict[str, str]]]:
    """Catalog sources (paths relative to the scan root) for what the scan found, plus notes on what
    was found but cannot go into a catalog (no catalog format for it, ambiguous choices)."""
    root = Path(result["root"])
    sources: dict[str, dict] = {}
    notes: list[dict[str, str]] = []
    dicom = [i["path"] for mods in result["patients"].values() for m in ("ct", "pet") for i in mods.get(m, [])]
    if dicom:
        path = _rel(_common(dicom), root)
        # the series are found again by header index at run time (any nesting, any file names)
        sources["ct"] = {"modality": "ct", "format": "dicom", "path": path}
        if any(mods.get("pet") for mods in result["patients"].values()):
            sources["pet"] = {"modality": "pet", "format": "dicom", "path": path}
    for modality, fmts, fmt, key in (("wsi", ("openslide",), "openslide", "wsi"),
                                      ("spatial", ("visium_h5ad", "spaceranger"), "visium", "spatial"),
                                      ("tile_features", ("tile_features_h5",), "tile_features_h5", "features")):
        found = {pid: [i for i in items if i.get("format") in fmts]
                 for pid, items in _per_patient(result, modality).items()}
        found = {pid: items for pid, items in found.items() if items}
        if found:
            files = {pid: [_rel(i["path"], root) for i in items] for pid, items in found.items()}
            sources[modality] = {"modality": key, "format": fmt,
                                 "path": _rel(_common([i["path"] for v in found.values() for i in v]), root),
                                 "files": files}
    sheets = result["cohort"].get("sample_sheet", [])
    for modality, fmt_sheet, fmt_file in (("expression", "gdc_star_counts", None),
                                          ("mutations", "gdc_maf_download", "gdc_maf"),
                                          ("copy_number", "gdc_gene_level_copy_number", "gistic_gene_thresholded")):
        linked = [i for items in _per_patient(result, modality).values() for i in items]
        if linked and sheets:
            files_dir = _common([str(Path(i["path"]).parent) for i in linked])
            sources[modality] = {"modality": modality, "format": fmt_sheet, "path": _rel(files_dir, root),
                                 "sample_sheet": _rel(sheets[0]["path"], root)}
            if len(sheets) > 1:
                notes.append({"path": sheets[1]["path"], "error": f"several sample sheets; the catalog uses "
                              f"{sheets[0]['path']}"})
            continue
        cohort_files = [i for i in result["cohort"].get(modality, []) if i.get("format") == fmt_file]
        if fmt_file and cohort_files:
            sources[modality] = {"modality": modality, "format": fmt_file, "path": _rel(cohort_files[0]["path"], root)}
    for key, modality in (("clinical", "clinical"), ("compounds", "compounds")):
        items = result["cohort"].get(key, [])
        if items:
            sources[modality] = {"modality": modality, "format": items[0]["format"],
                                 "path": _rel(items[0]["path"], root)}
            notes += [{"path": i["path"], "error": f"another {key} table; the catalog uses {items[0]['path']}"}
                      for i in items[1:]]
    for item in result["cohort"].get("features", []):
        name = "features_" + Path(item["path"]).name.split(".")[0]
        sources[name] = {"modality": "features", "format": "feature_table", "path": _rel(item["path"], root),
                         "id_column": item["id_column"]}
    return sources, notes


def write_scan_catalog(result: dict[str, Any], out: str | Path, cohort: str | None = None) -> tuple[Path, list]:
    """Write the catalog of a scan to ``out`` (root relative to the catalog's folder); returns the path
    and the notes of what could not be catalogued."""
    out = Path(out).resolve()
    sources, notes = catalog_sources(result)
    root = os.path.relpath(result["root"], out.parent)
    problems = [{"path": _rel(p["path"], Path(result["root"])), "error": str(p["error"])}
                for p in result.get("problems", [])]  # the run reports them among its skipped inputs
    text = catalog_yaml(cohort or Path(result["root"]).name, Path(root).as_posix(), sources, problems)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("# written by `fusionrx scan`; edit freely\n" + text)
    tmp.replace(out)
    return out, notes
