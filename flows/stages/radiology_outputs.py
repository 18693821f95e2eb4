"""Files of `fusionrx radiology --out`: NIfTI volumes (HU, SUV, masks, SUV on CT) and a fused PET/CT PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flows.store.artifacts import atomic_path
from imaging.nifti import write_nifti
from imaging.resample import resample_to_reference
from imaging.volume import Volume

CT_WINDOW_HU = (-160.0, 240.0)  # soft-tissue window


def fused_png(path: Path, base: Volume, overlay: Volume | None, mask: np.ndarray | None, title: str) -> Path:
    """Axial slice through the ROI's largest cross-section: `base` in grey, `overlay` (SUV) in colour, ROI contour."""
    k = int(np.argmax(mask.sum(axis=(1, 2)))) if mask is not None and mask.any() else base.shape[0] // 2
    dk, dj, di = base.spacing_mm
    extent = (-0.5 * di, (base.shape[2] - 0.5) * di, (base.shape[1] - 0.5) * dj, -0.5 * dj)  # mm, rows downwards
    fig = Figure(figsize=(6, 6 * base.shape[1] * dj / max(base.shape[2] * di, 1e-6) + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if base.units == "HU":
        ax.imshow(base.array[k], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], extent=extent,
                  interpolation="nearest")
    else:
        ax.imshow(base.array[k], cmap="gray_r", extent=extent, interpolation="nearest")
    if overlay is not None:
        suv = overlay.array[k]
        top = float(np.nanpercentile(overlay.array, 99.9)) or 1.0
        shown = np.ma.masked_less(suv, 0.1 * top)
        image = ax.imshow(shown, cmap="hot", vmin=0.0, vmax=top, alpha=0.55, extent=extent, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=overlay.units)
    if mask is not None and mask[k].any():
        ax.contour(mask[k].astype(float), levels=[0.5], colors="cyan", linewidths=1.2,
                   extent=extent, origin="upper")
    ax.set_title(f"{title} (slice {k} of {base.shape[0]})", fontsize=9)
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_outputs(out: Path, ct: Volume | None, suv: Volume | None, ct_mask: np.ndarray | None,
                  pet_mask: np.ndarray | None, roi: str) -> list[Path]:
    """Write ct_hu / suv / mask_ct / mask_pet / suv_on_ct NIfTI files and fused.png into `out` (each atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    suv_on_ct = resample_to_reference(suv, ct, order=1) if ct is not None and suv is not None else None
    if ct is not None:
        written.append(write_nifti(ct, out / "ct_hu.nii.gz"))
        if ct_mask is not None:
            written.append(write_nifti(ct.with_array(ct_mask, units="mask"), out / "mask_ct.nii.gz", np.uint8))
    if suv is not None:
        written.append(write_nifti(suv, out / "suv.nii.gz"))
        if pet_mask is not None:
            written.append(write_nifti(suv.with_array(pet_mask, units="mask"), out / "mask_pet.nii.gz", np.uint8))
    if suv_on_ct is not None:
        written.append(write_nifti(suv_on_ct, out / "suv_on_ct.nii.gz"))
    base, mask = (ct, ct_mask) if ct is not None else (suv, pet_mask)
    written.append(fused_png(out / "fused.png", base, suv_on_ct if ct is not None else None, mask, f"ROI {roi}"))
    return written
