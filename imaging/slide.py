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


def slide_mpp(slide: "openslide.OpenSlide") -> float:
    """Level-0 resolution in micrometres per pixel (x), from openslide.mpp-x; SlideError if absent."""
    openslide = _openslide()
    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    where = getattr(slide, "_filename", None) or "slide"
    if value is None:
        raise SlideError(f"{where}: property {openslide.PROPERTY_NAME_MPP_X} is absent; the resolution is needed")
    try:
        mpp = float(value)
    except ValueError as exc:
        raise SlideError(f"{where}: {openslide.PROPERTY_NAME_MPP_X}={value!r} is not a number") from exc
    if not mpp > 0:
        raise SlideError(f"{where}: {openslide.PROPERTY_NAME_MPP_X}={value!r}, expected a positive um/px")
    return mpp


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
