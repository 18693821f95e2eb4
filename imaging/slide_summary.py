"""What a slide is: format, vendor, resolution, pyramid, tissue fraction and tile count at a target mpp."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from imaging.slide import detect_slide_format, open_slide, slide_info
from imaging.tiling import tile_grid
from imaging.tissue import mask_thumbnail, tissue_mask_from_rgb


def summarise_slide(
    path: str | os.PathLike,
    tile_size: int = 256,
    target_mpp: float = 0.5,
    min_tissue: float = 0.5,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Describe a slide (JSON-ready): format, vendor, mpp (um/px), objective, levels, tissue fraction of the
    slide area, and the number of tissue tiles of tile_size px at target_mpp; with out_dir, write
    thumbnail.png and tissue_mask.png there (same size) and add their paths."""
    path = Path(path)
    info = slide_info(path)
    with open_slide(path) as slide:
        rgb, down = mask_thumbnail(slide)
        mask = tissue_mask_from_rgb(rgb)
        grid = tile_grid(slide, mask, down, tile_size=tile_size, target_mpp=target_mpp, min_tissue=min_tissue)
    levels = [{"level": i, "width": w, "height": h, "downsample": d, "mpp": info.mpp * d}
              for i, ((w, h), d) in enumerate(zip(info.level_dimensions, info.level_downsamples))]
    out: dict[str, Any] = {
        "path": str(path),
        "format": detect_slide_format(path) if path.is_file() else "dicom",
        "vendor": info.vendor,
        "mpp": info.mpp,
        "objective_power": info.objective_power,
        "levels": levels,
        "tissue_fraction": float(mask.mean()),
        "target_mpp": float(target_mpp),
        "tile_size": int(tile_size),
        "tile_um": grid.tile_um,
        "read_level": grid.level,
        "n_tiles": len(grid),
    }
    if out_dir is not None:
        out.update(_write_pngs(Path(out_dir), path.stem, rgb, mask))
    return out


def _write_pngs(out_dir: Path, stem: str, rgb: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Write the thumbnail and the tissue mask as PNGs (temp file, then rename); their paths."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, image in (("thumbnail_png", Image.fromarray(rgb)),
                       ("tissue_mask_png", Image.fromarray(mask.astype(np.uint8) * 255))):
        target = out_dir / f"{stem}_{key.removesuffix('_png')}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        image.save(tmp, format="PNG")
        tmp.replace(target)
        paths[key] = str(target)
    return paths
