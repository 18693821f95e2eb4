"""Whole-slide image opening behind one small wrapper over OpenSlide (openslide-bin ships the C library)."""

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


def open_slide(path: str | os.PathLike) -> "openslide.OpenSlide":
    """Open a whole-slide image; SlideError naming the file if it is missing, corrupt or unsupported."""
    openslide = _openslide()
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: slide file does not exist")
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(f"{path}: not a whole-slide format OpenSlide supports ({exc})") from exc
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: corrupt or unreadable slide ({exc})") from exc
    return slide


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
        )


def slide_info(path: str | os.PathLike) -> SlideInfo:
    """Open a slide file and return its SlideInfo (the slide is closed again)."""
    slide = open_slide(path)
    try:
        return SlideInfo.from_slide(slide, path)
    finally:
        slide.close()
