"""Whole-slide image opening: every OpenSlide format (svs, ndpi, mrxs, scn, vms, bif, tiff, DICOM WSI),
recognised by content with OpenSlide.detect_format, and plain TIFF without a pyramid through tifffile
(imaging.slide_reader). Both give objects with the OpenSlide interface."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fusion.errors import SlideError

if TYPE_CHECKING:  # pragma: no cover
    import openslide


def _openslide():
    """Import openslide, turning a missing Python package or C library into a SlideError."""
    try:
        import openslide
    except (ImportError, OSError) as exc:  # OSError: the shared library could not be loaded
        raise SlideError(f"openslide is not usable ({exc}); install openslide-python and openslide-bin") from exc
    return openslide


def detect_slide_format(path: str | os.PathLike) -> str | None:
    """OpenSlide's vendor name for a slide file ('aperio', 'hamamatsu', 'mirax', 'dicom', ...), 'plain-tiff'
    for a TIFF only tifffile reads, None when the file is no slide."""
    openslide = _openslide()
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on unreadable files in some versions
        vendor = None
    if vendor is not None:
        return vendor
    with open(path, "rb") as f:
        magic = f.read(4)
    return PLAIN_TIFF if magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") else None


PLAIN_TIFF = "plain-tiff"


def open_slide(path: str | os.PathLike):
    """Open a whole-slide image (OpenSlide object, or PlainTiffSlide for a TIFF OpenSlide refuses);
    SlideError naming the file if it is missing, corrupt, unsupported or cannot be streamed."""
    openslide = _openslide()
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: slide file does not exist")
    if path.is_dir():  # a DICOM WSI folder: OpenSlide opens it through any of its files
        files = sorted(p for p in path.iterdir() if p.is_file())
        hit = next((p for p in files if _safe_detect(openslide, p) == "dicom"), None)
        if hit is None:
            raise SlideError(f"{path}: folder holds no DICOM whole-slide file OpenSlide recognises")
        path = hit
    vendor = detect_slide_format(path)
    if vendor == PLAIN_TIFF:
        from imaging.slide_reader import PlainTiffSlide

        return PlainTiffSlide(path)
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(f"{path}: not a whole-slide format OpenSlide supports ({exc})") from exc
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: corrupt or unreadable slide ({exc})") from exc
    return slide


def _safe_detect(openslide, path: Path) -> str | None:
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None


# Level-0 resolutions a slide scanner produces (um/px): 0.05 (beyond 100x oil) to 100 (a macro overview).
MPP_RANGE_UM = (0.05, 100.0)
# Resolutions image software writes when it knows none (px per inch): 72 (TIFF / Photoshop), 96 (Windows).
DEFAULT_DPI = (72.0, 96.0)


def _tiff_resolution_note(properties) -> str:
    """' (TIFF XResolution 72 px/inch, a software default ...)' from the tiff.* properties, else ''."""
    x_res, unit = properties.get("tiff.XResolution"), str(properties.get("tiff.ResolutionUnit", "") or "")
    if x_res is None:
        return ""
    try:
        dpi = float(x_res) if unit == "inch" else float(x_res) * 2.54 if unit == "centimeter" else None
    except ValueError:
        return ""
    default = dpi is not None and any(abs(dpi - d) < 1e-6 for d in DEFAULT_DPI)
    return (f" (TIFF XResolution {x_res} px/{unit or 'unit'}"
            + (", a 72/96 dpi software default, not a scan resolution" if default else "") + ")")


def plausible_mpp(mpp: float, where: str, note: str = "") -> float:
    """`mpp` (um/px) when it is a slide scanner's resolution (MPP_RANGE_UM), else SlideError naming `where`
    and the value (a 72 dpi TIFF reads as 352.8 um/px and would be planned as millions of tiles)."""
    lo, hi = MPP_RANGE_UM
    if not lo <= mpp <= hi:
        raise SlideError(f"{where}: resolution {mpp:.6g} um/px{note} is not a slide scan resolution (expected "
                         f"{lo:g}-{hi:g} um/px); give the slide's true mpp (e.g. rewrite it with "
                         "`vips tiffsave in.tif out.tif --xres <px/mm> --yres <px/mm>`)")
    return float(mpp)


def slide_mpp(slide: "openslide.OpenSlide") -> float:
    """Level-0 resolution in micrometres per pixel (x), from openslide.mpp-x; SlideError if absent or
    implausible (outside MPP_RANGE_UM, e.g. a TIFF's 72 dpi default)."""
    openslide = _openslide()
    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    where = getattr(slide, "_filename", None) or "slide"
    note = _tiff_resolution_note(slide.properties)
    if value is None:
        raise SlideError(f"{where}: property {openslide.PROPERTY_NAME_MPP_X} is absent{note}; the resolution is "
                         "needed")
    try:
        mpp = float(value)
    except ValueError as exc:
        raise SlideError(f"{where}: {openslide.PROPERTY_NAME_MPP_X}={value!r} is not a number") from exc
    if not mpp > 0:
        raise SlideError(f"{where}: {openslide.PROPERTY_NAME_MPP_X}={value!r}, expected a positive um/px")
    return plausible_mpp(mpp, f"{where}: {openslide.PROPERTY_NAME_MPP_X}", note)


@dataclass(frozen=True)
class SlideInfo:
    """Pyramid geometry of a slide: level sizes (width, height) in px, downsamples and level-0 mpp (um/px)."""

    path: str
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    vendor: str | None
    objective_power: float | None = None

    @classmethod
    def from_slide(cls, slide: "openslide.OpenSlide", path: str | os.PathLike) -> "SlideInfo":
        """Describe an open slide (path is the file it was opened from)."""
        openslide = _openslide()
        return cls(
            path=str(path),
            level_count=int(slide.level_count),
            level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            mpp=slide_mpp(slide),
            vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR),
            objective_power=_float_or_none(slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
        )


def _float_or_none(value: object) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def slide_info(path: str | os.PathLike) -> SlideInfo:
    """Open a slide file and return its SlideInfo (the slide is closed again)."""
    slide = open_slide(path)
    try:
        return SlideInfo.from_slide(slide, path)
    finally:
        slide.close()
