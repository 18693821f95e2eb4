"""Which ROI to measure and how: named ROIs (RTSTRUCT / SEG / NIfTI) chosen by patterns, else an automatic lesion.

The one ROI + lesion measurement path of FusionRx (`fusionrx radiology` and the pipeline's radiology stage):

- `RoiSpec`: shell-style ROI name patterns per modality ('ct', 'pet') and what to do when none matches
  ('auto': the automatic lesion, 'none': measure nothing).
- `match_rois(refs, patterns)`: the ROIs whose names match, ordered by the first pattern that matches.
- `auto_lesion(ct, suv)`: PET 40 % SUVmax component (near the CT lung tumour when there is one), else the
  CT lung tumour.
- `measure_rois(ct, suv, refs, spec)`: the patient-level ROI on each grid, its phenotypes, one row per
  matching ROI (lesions), totals (MTV, TLG) and the ROIs that could not be placed (problems).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion.errors import CatalogError, DicomSeriesError, SegmentationError
from imaging.phenotypes import (
    MTV_FRACTION,
    PET_SEARCH_MARGIN_MM,
    near_mask,
    pet_tumour_mask,
    roi_phenotypes,
    segment_lung_tumour,
    tumour_centroid_mm,
)
from imaging.resample import resample_to_reference
from imaging.segmentation import RoiRef, roi_mask
from imaging.volume import (
    AxisMap,
    CompactMask,
    Volume,
    axis_map,
    check_frame_of_reference,
    resample_nearest,
)

MODALITIES = ("ct", "pet")
FALLBACKS = ("auto", "none")
AUTO = "auto"
AUTO_PET_LABEL = "auto:pet_40pct_suvmax"
AUTO_CT_LABEL = "auto:ct_lung_tumour"


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    """A pattern list from config: one string or a list of non-empty strings."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in value):
        raise CatalogError(f"{where}: expected a list of ROI name patterns (non-empty strings), found {value!r}")
    return tuple(p.strip() for p in value)


@dataclass(frozen=True)
class RoiSpec:
    """ROI name patterns per modality ('ct', 'pet'; shell-style, case-insensitive) and the fallback.

    `fallback` 'auto': measure the automatic lesion when no ROI matches; 'none': measure nothing.
    """

    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fallback: str = AUTO

    def __post_init__(self) -> None:
        unknown = sorted(set(self.patterns) - set(MODALITIES))
        if unknown:
            raise CatalogError(f"roi: unknown modality key(s) {unknown}, expected {list(MODALITIES)}")
        if self.fallback not in FALLBACKS:
            raise CatalogError(f"roi.fallback: expected one of {list(FALLBACKS)}, found {self.fallback!r}")
        object.__setattr__(self, "patterns", {m: _patterns(p, f"roi.{m}") for m, p in self.patterns.items()})

    @classmethod
    def from_config(cls, value: Any, fallback: str | None = None, where: str = "roi") -> RoiSpec:
        """Spec from config: None (no named ROI), a list of patterns (both modalities) or a mapping
        {ct: [...], pet: [...], fallback: auto|none}; `fallback` given here overrides the mapping's.

        Raises CatalogError naming `where` and the key on anything else.
        """
        mapping_fallback = None
        if isinstance(value, RoiSpec):
            return cls(patterns=dict(value.patterns), fallback=fallback or value.fallback)
        if value is None:
            patterns: dict[str, tuple[str, ...]] = {}
        elif isinstance(value, (str, list, tuple)):
            both = _patterns(value, where)
            patterns = {m: both for m in MODALITIES}
        elif isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in (*MODALITIES, "fallback"))
            if unknown:
                raise CatalogError(f"{where}: unknown key(s) {unknown}, expected {[*MODALITIES, 'fallback']}")
            patterns = {m: _patterns(value[m], f"{where}.{m}") for m in MODALITIES if value.get(m) is not None}
            mapping_fallback = value.get("fallback")
        else:
            raise CatalogError(f"{where}: expected None, a list of ROI name patterns or a mapping "
                               f"{{ct: [...], pet: [...]}}, found {type(value).__name__} {value!r}")
        chosen = fallback if fallback is not None else (mapping_fallback if mapping_fallback is not None else AUTO)
        if chosen not in FALLBACKS:
            raise CatalogError(f"{where}.fallback: expected one of {list(FALLBACKS)}, found {chosen!r}")
        return cls(patterns=patterns, fallback=chosen)

    def for_modality(self, modality: str) -> tuple[str, ...]:
        """Patterns for 'ct' or 'pet' (empty when none were given)."""
        return self.patterns.get(modality, ())


def match_rois(refs: Iterable[RoiRef], patterns: Iterable[str]) -> list[RoiRef]:
    """Every ROI whose name matches a shell-style pattern (case-insensitive), ordered by the first pattern
    that matches it, then by the order of `refs`."""
    pats = [p.lower() for p in patterns]
    ranked = []
    for order, ref in enumerate(refs):
        name = ref.name.lower()
        rank = next((i for i, p in enumerate(pats) if fnmatch.fnmatchcase(name, p)), None)
        if rank is not None:
            ranked.append((rank, order, ref))
    return [ref for _, _, ref in sorted(ranked, key=lambda t: (t[0], t[1]))]


def _target_box(amap: AxisMap, compact: CompactMask, target_shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The target-grid box whose nearest source voxels fall in the compact mask's box (None: none do)."""
    box = []
    for b, n in enumerate(target_shape):
        a = amap.axes[b]
        src = np.floor(amap.coords(b, np.arange(n)) + 0.5)
        inside = np.flatnonzero((src >= compact.offset[a]) & (src < compact.offset[a] + compact.array.shape[a]))
        if inside.size == 0:
            return None
        box.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(box)


def mask_to_grid(mask: np.ndarray, source: Volume, target: Volume) -> np.ndarray:
    """Nearest-neighbour copy of a boolean mask from `source`'s grid onto `target`'s, through the affines.

    Axis-aligned grids (the usual CT/PET pair): only the mask's bounding box is mapped, by per-axis index
    gathers on the compact (cropped) mask, equal to the general path; rotated grids take the general affine
    resampling. DicomSeriesError when the frames of reference differ.
    """
    amap = axis_map(source, target)
    if amap is None:
        moved = resample_to_reference(source.with_array(mask.astype(np.float32), units="mask"), target, order=0)
        return moved.array > 0.5
    check_frame_of_reference(source, target)
    out = np.zeros(target.shape, dtype=bool)
    compact = CompactMask.from_mask(mask)
    box = _target_box(amap, compact, target.shape) if compact is not None else None
    if compact is not None and box is not None:
        out[box] = resample_nearest(compact.array, amap, target.shape, False, box, compact.offset, source.shape)
    return out


def auto_lesion(ct: Volume | None, suv: Volume | None) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Automatic lesion (label, mask on the CT grid, mask on the PET grid): the PET 40 % SUVmax component
    (searched within PET_SEARCH_MARGIN_MM of the CT lung tumour when one is found), else the CT lung tumour."""
    ct_lesion = segment_lung_tumour(ct) if ct is not None else None
    if suv is not None:
        search = None
        if ct_lesion is not None and ct_lesion.any():
            on_pet = mask_to_grid(ct_lesion, ct, suv)
            search = near_mask(on_pet, suv.spacing_mm, PET_SEARCH_MARGIN_MM) if on_pet.any() else None
        pet_lesion = pet_tumour_mask(suv, search_mask=search)
        ct_mask = mask_to_grid(pet_lesion, suv, ct) if ct is not None else None
        return AUTO_PET_LABEL, ct_mask, pet_lesion
    return AUTO_CT_LABEL, ct_lesion, None


@dataclass
class RoiMeasurement:
    """What `measure_rois` measured.

    roi: ROI name (or auto label; 'CT name + PET name' when the grids use different ROIs), None when nothing
    was measured. roi_source: 'rtstruct' | 'seg' | 'nifti' | 'auto' | None. ct_mask / pet_mask: boolean masks
    [k, j, i] on the CT / PET grid (None without that volume or ROI). phenotypes: roi_phenotypes + roi,
    roi_source (empty when nothing was measured). lesions: one row per matching ROI (name, source, path,
    matched_by, its roi_phenotypes). totals: n_lesions, total_mtv_ml, total_tlg (over the rows matched by the
    PET patterns). problems: [{path, error}] for ROIs that could not be placed on a grid.
    """

    roi: str | None
    roi_source: str | None
    ct_mask: np.ndarray | None
    pet_mask: np.ndarray | None
    phenotypes: dict[str, Any]
    lesions: list[dict[str, Any]]
    totals: dict[str, Any]
    problems: list[dict[str, str]]
    fallback_used: bool
    roi_by_modality: dict[str, str | None] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """True when an ROI (named or automatic) was measured."""
        return bool(self.phenotypes)


class _Placer:
    """ROI masks on the CT / PET grid, each placed once; failures go to `problems`."""

    def __init__(self, volumes: dict[str, Volume | None], problems: list[dict[str, str]]) -> None:
        self.volumes, self.problems = volumes, problems
        self._cache: dict[tuple[RoiRef, str], np.ndarray | None] = {}

    def mask(self, ref: RoiRef, modality: str) -> np.ndarray | None:
        key = (ref, modality)
        if key not in self._cache:
            volume = self.volumes[modality]
            mask = None
            if volume is not None:
                try:
                    mask = roi_mask(ref, volume)
                except SegmentationError as exc:
                    self.problems.append({"path": ref.path, "error": str(exc)})
            self._cache[key] = mask
        return self._cache[key]

    def first_nonempty(self, refs: list[RoiRef], modality: str) -> tuple[RoiRef | None, np.ndarray | None]:
        for ref in refs:
            mask = self.mask(ref, modality)
            if mask is not None and mask.any():
                return ref, mask
        return None, None


def _nan_sum(values: Iterable[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    return float(sum(finite)) if finite else float("nan")


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pet_rows = [r for r in rows if "pet" in r["matched_by"].split(",") or r["source"] == AUTO]
    return {"n_lesions": len(rows), "total_mtv_ml": _nan_sum(r["mtv_ml"] for r in pet_rows),
            "total_tlg": _nan_sum(r["tlg"] for r in pet_rows)}


def _other_grid(ref: RoiRef, mask: np.ndarray, source: Volume, target: Volume | None, placer: _Placer,
                modality: str) -> np.ndarray | None:
    """The ROI found on one grid, on the other: placed there from its file when it lands there, else the
    mask copied across by nearest neighbour (mask_to_grid)."""
    if target is None:
        return None
    direct = placer.mask(ref, modality)
    if direct is not None and direct.any():
        return direct
    try:
        return mask_to_grid(mask, source, target)
    except DicomSeriesError as exc:
        placer.problems.append({"path": ref.path, "error": str(exc)})
        return None


def measure_rois(ct: Volume | None, suv: Volume | None, refs: list[RoiRef], spec: RoiSpec,
                 mtv_fraction: float = MTV_FRACTION) -> RoiMeasurement:
    """Measure one patient's ROI: CT (HU) and PET (SUVbw) phenotypes on each volume's own grid.

    The CT ROI is the first ROI matching the CT patterns that lands on the CT grid, the PET ROI likewise
    with the PET patterns; an ROI found on one grid only is carried onto the other. Every ROI matching
    either modality's patterns is a lesion row. No ROI: the automatic lesion (spec.fallback 'auto') or
    nothing (phenotypes empty, spec.fallback 'none').

    Args:
        ct: CT volume in HU, or None. suv: PET volume in SUVbw, or None.
        refs: candidate ROIs (segmentation.list_rois over the patient's segmentation files).
        spec: patterns per modality and fallback. mtv_fraction: MTV threshold as a fraction of SUVmax.
    """
    problems: list[dict[str, str]] = []
    placer = _Placer({"ct": ct, "pet": suv}, problems)
    matched = {m: match_rois(refs, spec.for_modality(m)) for m in MODALITIES}

    lesions = []
    for ref in dict.fromkeys(matched["ct"] + matched["pet"]):  # union, CT order first
        ct_mask, pet_mask = placer.mask(ref, "ct"), placer.mask(ref, "pet")
        if not any(m is not None and m.any() for m in (ct_mask, pet_mask)):
            problems.append({"path": ref.path, "error": f"ROI {ref.name!r} does not intersect the CT or PET grid"})
            continue
        lesions.append({"name": ref.name, "source": ref.kind, "path": ref.path,
                        "matched_by": ",".join(m for m in MODALITIES if ref in matched[m]),
                        **roi_phenotypes(ct, ct_mask, suv, pet_mask, mtv_fraction)})

    ct_ref, ct_mask = placer.first_nonempty(matched["ct"], "ct")
    pet_ref, pet_mask = placer.first_nonempty(matched["pet"], "pet")
    if ct_ref is not None and pet_ref is None:
        pet_mask = _other_grid(ct_ref, ct_mask, ct, suv, placer, "pet")
    elif pet_ref is not None and ct_ref is None:
        ct_mask = _other_grid(pet_ref, pet_mask, suv, ct, placer, "ct")

    fallback_used = False
    names = {"ct": ct_ref.name if ct_ref else None, "pet": pet_ref.name if pet_ref else None}
    if ct_ref is not None or pet_ref is not None:
        used = [r for r in (ct_ref, pet_ref) if r is not None]
        label = used[0].name if len(used) == 1 or used[0] == used[1] else f"{used[0].name} + {used[1].name}"
        source = used[0].kind
    elif spec.fallback == AUTO and (ct is not None or suv is not None):
        label, ct_mask, pet_mask = auto_lesion(ct, suv)
        source, fallback_used = AUTO, True
        names = {"ct": label if ct_mask is not None else None, "pet": label if pet_mask is not None else None}
        lesions = [{"name": label, "source": AUTO, "path": "", "matched_by": "auto",
                    **roi_phenotypes(ct, ct_mask, suv, pet_mask, mtv_fraction)}]
    else:
        return RoiMeasurement(None, None, None, None, {}, lesions, _totals(lesions), problems, False, names)

    phenotypes = {"roi": label, "roi_source": source,
                  **roi_phenotypes(ct, ct_mask, suv, pet_mask, mtv_fraction)}
    return RoiMeasurement(label, source, ct_mask, pet_mask, phenotypes, lesions, _totals(lesions), problems,
                          fallback_used, names)


def roi_centroid_mm(measurement: RoiMeasurement, ct: Volume | None, suv: Volume | None) -> np.ndarray | None:
    """Centre of mass of the measured ROI in LPS mm (x, y, z): on the CT grid when it holds the ROI, else on
    the PET grid; None when nothing was measured (centre a patch on the volume centre then)."""
    for volume, mask in ((ct, measurement.ct_mask), (suv, measurement.pet_mask)):
        if volume is not None and mask is not None and mask.any():
            return tumour_centroid_mm(mask, volume)
    return None
