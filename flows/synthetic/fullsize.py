"""Full-size synthetic inputs for benchmarks: a 512x512x300 chest CT with its PET (DICOM, written slice by
slice), and a pyramidal 40x slide of 100k+ tissue tiles (tiled JPEG TIFF written from a tile generator).

Memory stays flat: the CT is built one slice at a time (a few MB), the PET is one small volume, and the
slide's tiles are JPEG-encoded once per texture variant and streamed into the file as encoded bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from flows.synthetic.dicom_writer import (
    AIR_HU, CT_RESCALE_INTERCEPT, INJECTION_TIME_S, LUNG_HU, TISSUE_HU, TUMOUR_HU, CTImageStorage, _base_dataset,
    _grid_centre_and_fov, _grid_points, _set_slice_geometry, _time_tm, _tissue_masks, _uid, ct_geometry,
    frame_of_reference_uid_for, lung_tumour_centre_mm, study_uid_for, write_pet_series,
)
from flows.synthetic.slide_writer import _downsample2, render_he

FULL_CT_SHAPE = (300, 512, 512)  # slices, rows, cols
FULL_CT_SPACING = (0.9765625, 0.9765625)  # mm: a 500 mm field of view
FULL_CT_THICKNESS = 2.0  # mm: 600 mm along z


def write_fullsize_ct_pet(out_dir: str | os.PathLike, patient_id: str = "TCGA-FX-0001", seed: int = 0,
                          shape: tuple[int, int, int] = FULL_CT_SHAPE, tumour_radius_mm: float = 20.0) -> dict:
    """CT (``shape``, one DICOM file per slice, built slice by slice) + PET (4 mm voxels) of one chest; truth."""
    out = Path(out_dir)
    ct_dir, pet_dir = out / "ct" / patient_id, out / "pet" / patient_id
    ct_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    geometry = ct_geometry(shape, FULL_CT_SPACING, FULL_CT_THICKNESS)
    tumour_radius_mm = min(tumour_radius_mm, 0.5 * min(geometry.lung_semi_axes_mm))  # reduced test sizes
    centre = lung_tumour_centre_mm(rng, geometry, tumour_radius_mm)
    origin, _, fov = _grid_centre_and_fov(shape, FULL_CT_SPACING, FULL_CT_THICKNESS, None)
    study_uid, frame_uid = study_uid_for(patient_id), frame_of_reference_uid_for(patient_id)
    series_uid = _uid("fusionrx-ct-series", patient_id, seed)
    for k in range(shape[0]):
        ds = _base_dataset(CTImageStorage, _uid("fusionrx-ct-slice", patient_id, seed, k), patient_id=patient_id,
                           modality="CT", study_uid=study_uid, series_uid=series_uid, frame_of_reference_uid=frame_uid,
                           series_number=2, series_time=_time_tm(INJECTION_TIME_S + 3000.0))
        ds.SeriesDescription, ds.ImageType, ds.InstanceNumber = "Synthetic full-size chest CT", ["ORIGINAL", "PRIMARY", "AXIAL"], k + 1
        _set_slice_geometry(ds, origin, k, FULL_CT_THICKNESS, FULL_CT_SPACING, shape)
        ds.SpacingBetweenSlices, ds.KVP = str(FULL_CT_THICKNESS), "120"
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(CT_RESCALE_INTERCEPT), "1", "HU"
        ds.PixelData = _ct_slice(origin, k, shape, geometry, centre, tumour_radius_mm, rng).tobytes()
        path = ct_dir / f"CT_{k + 1:04d}.dcm"
        ds.save_as(path.with_name(f".{path.name}.tmp"), enforce_file_format=True)
        os.replace(path.with_name(f".{path.name}.tmp"), path)
    pet_shape = tuple(int(round(f / 4.0)) for f in (fov[2], fov[1], fov[0]))
    write_pet_series(pet_dir, patient_id=patient_id, tumour_centre_mm=centre, tumour_radius_mm=tumour_radius_mm,
                     tumour_suv=8.0, weight_kg=70.0, dose_bq=3.7e8, injection_to_scan_s=3600.0, seed=seed,
                     shape=pet_shape, pixel_spacing_mm=(4.0, 4.0), slice_thickness_mm=4.0, geometry=geometry,
                     frame_of_reference_uid=frame_uid, study_uid=study_uid, noise_fraction=0.05)
    return {"ct_dir": str(ct_dir), "pet_dir": str(pet_dir), "ct_shape": list(shape), "pet_shape": list(pet_shape),
            "tumour_centre_mm": centre.tolist(), "tumour_radius_mm": tumour_radius_mm}


def _ct_slice(origin: np.ndarray, k: int, shape: tuple[int, int, int], geometry, centre: np.ndarray,
              radius_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Stored uint16 pixels of axial slice k (air, tissue, lungs, tumour, 10 HU noise)."""
    o = origin + np.array([0.0, 0.0, k * FULL_CT_THICKNESS])
    pts = _grid_points(o, (1, shape[1], shape[2]), FULL_CT_SPACING, FULL_CT_THICKNESS)[0]
    body, lung = _tissue_masks(pts, geometry)
    hu = np.full(shape[1:], AIR_HU, dtype=np.float32)
    hu[body], hu[lung] = TISSUE_HU, LUNG_HU
    hu[(np.sum((pts - centre) ** 2, axis=-1) <= radius_mm**2) & body] = TUMOUR_HU
    hu += rng.normal(0.0, 10.0, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu - CT_RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)


# ------------------------------------------------------------------------------------------ slide
def slide_size_for(tissue_tiles: int, tile: int) -> tuple[int, int]:
    """(width, height) level-0 px of a 4:3 slide whose tissue ellipse (0.46 x 0.44 of the sides) holds
    at least ``tissue_tiles`` whole tiles."""
    frac = math.pi * 0.46 * 0.44  # ellipse area / slide area
    h_tiles = math.ceil(math.sqrt(tissue_tiles / (frac * 4 / 3)) * 1.03)
    return int(math.ceil(h_tiles * 4 / 3)) * tile, h_tiles * tile


def _encoded_bank(texture: np.ndarray, tile: int, quality: int, tmp: Path) -> list[bytes]:
    """JPEG tiles as tifffile itself encodes them (written to a one-row TIFF, then read back as bytes)."""
    n = texture.shape[1] // tile
    tifffile.imwrite(tmp, texture[:tile, : n * tile], tile=(tile, tile), compression="jpeg",
                     compressionargs={"level": quality}, photometric="rgb")
    with tifffile.TiffFile(tmp) as tif, open(tmp, "rb") as fh:
        page = tif.pages[0]
        assert page.jpegtables is None
        out = []
        for off, cnt in zip(page.dataoffsets, page.databytecounts):
            fh.seek(off)
            out.append(fh.read(cnt))
    tmp.unlink()
    return out


def _level_tiles(level: int, grid: tuple[int, int], size0: tuple[int, int], tile: int, banks: dict,
                 ellipse: tuple[float, ...], tumour: tuple[float, ...]) -> Iterator[bytes]:
    """Encoded tiles of one pyramid level in row-major order: background, stroma or tumour texture by the
    level-0 position of the tile centre."""
    cols, rows = grid
    scale = 2**level
    ex, ey, rx, ry = ellipse
    tx, ty, tr = tumour
    for r in range(rows):
        for c in range(cols):
            x, y = (c + 0.5) * tile * scale, (r + 0.5) * tile * scale
            if ((x - ex) / rx) ** 2 + ((y - ey) / ry) ** 2 > 1.0:
                yield banks["background"][level]
            else:
                kind = "tumour" if (x - tx) ** 2 + (y - ty) ** 2 <= tr**2 else "stroma"
                bank = banks[kind][level]
                yield bank[(r * 7 + c * 13) % len(bank)]


def write_fullsize_slide(path: str | os.PathLike, tissue_tiles: int = 100_000, tile: int = 256, mpp: float = 0.25,
                         quality: int = 80, seed: int = 0, bank_px: int = 2048) -> dict:
    """A pyramidal tiled-JPEG TIFF at 40x (``mpp`` um/px) with at least ``tissue_tiles`` tissue tiles at level 0
    (textures cut from two rendered ``bank_px`` squares of stroma and tumour, JPEG-encoded once)."""
    path = Path(path)
    width, height = slide_size_for(tissue_tiles, tile)
    ellipse = (width / 2, height / 2, 0.46 * width, 0.44 * height)
    tumour = (0.4 * width, 0.45 * height, 0.15 * min(width, height))
    levels = max(1, int(math.ceil(math.log2(max(width, height) / 2048))) + 1)
    banks: dict[str, list] = {"background": [], "stroma": [], "tumour": []}
    side = bank_px
    for kind, density in (("stroma", 3.0), ("tumour", 25.0)):
        img, _ = render_he(size_px=(side, side), tissue_ellipse=(side / 2, side / 2, 4 * side, 4 * side),
                           tumour_circle=(0.0, 0.0, 0.0), nuclear_density=density, nuclear_radius_px=6.0,
                           seed=seed + (kind == "tumour"), )
        if kind == "tumour":  # render_he puts nuclei by region; re-render with the whole patch as tumour
            img, _ = render_he(size_px=(side, side), tissue_ellipse=(side / 2, side / 2, 4 * side, 4 * side),
                               tumour_circle=(side / 2, side / 2, 4 * side), nuclear_density=density,
                               nuclear_radius_px=6.0, seed=seed + 1)
        for level in range(levels):
            reps = max(1, tile // img.shape[0] + 1)
            row = np.tile(img, (reps, reps, 1))[:tile] if img.shape[0] < tile else img[:tile]
            banks[kind].append(_encoded_bank(np.ascontiguousarray(row), tile, quality, path.with_suffix(".bank.tif")))
            img = np.clip(np.rint(_downsample2(img.astype(np.float32))), 0, 255).astype(np.uint8)
    bg = np.full((tile, tile, 3), 240, np.uint8)
    banks["background"] = [_encoded_bank(bg, tile, quality, path.with_suffix(".bank.tif"))[0]] * levels
    tmp = path.with_name(path.name + ".tmp")
    dims = []
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level in range(levels):
            w, h = -(-width // 2**level), -(-height // 2**level)
            grid = (-(-w // tile), -(-h // tile))
            res = 1e4 / (mpp * 2**level)
            tif.write(_level_tiles(level, grid, (width, height), tile, banks, ellipse, tumour), shape=(h, w, 3),
                      dtype=np.uint8, tile=(tile, tile), compression="jpeg", compressionargs={"level": quality},
                      photometric="rgb", resolution=(res, res), resolutionunit="CENTIMETER",
                      description="FusionRx synthetic full-size H&E" if level == 0 else None, metadata=None,
                      subfiletype=0 if level == 0 else 1)
            dims.append((w, h))
    os.replace(tmp, path)
    n_tissue = sum(1 for r in range(-(-height // tile)) for c in range(-(-width // tile))
                   if (((c + 0.5) * tile - ellipse[0]) / ellipse[2]) ** 2
                   + (((r + 0.5) * tile - ellipse[1]) / ellipse[3]) ** 2 <= 1.0)
    return {"path": str(path), "size_px": (width, height), "mpp": mpp, "levels": levels, "level_dimensions": dims,
            "tile": tile, "tissue_tiles_level0": n_tissue, "bytes": path.stat().st_size}
