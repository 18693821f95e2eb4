"""10x Space Ranger output folders -> AnnData, spot coordinates in the Visium image's own full-resolution pixels.

Reads what every Space Ranger version writes: the feature-barcode matrix (``filtered_feature_bc_matrix.h5``),
spot positions as ``spatial/tissue_positions_list.csv`` (v1, no header), ``spatial/tissue_positions.csv``
(v2, header) or ``spatial/tissue_positions.parquet`` (newer), ``spatial/scalefactors_json.json`` and the
hires / lowres PNGs. The folder may be the ``outs`` folder or the run folder holding it.

Linking spots to a diagnostic slide needs an explicit 3x3 affine (``slide_transform``): read from
``slide_transform.json`` beside ``spatial/`` when present, never assumed.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusion.errors import SpatialError

POSITION_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv")
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
SCALEFACTOR_KEYS = ("tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres")
COUNT_FILE = "filtered_feature_bc_matrix.h5"
SLIDE_TRANSFORM_FILE = "slide_transform.json"  # {"matrix": [[a, b, c], [d, e, f], [0, 0, 1]]}
SLIDE_TRANSFORM_KEY = "slide_transform"  # adata.uns key: 3x3 Visium full-res px (x, y, 1) -> slide level-0 px


def spaceranger_outs(folder: str | os.PathLike) -> Path:
    """The folder holding ``spatial/`` (the folder itself or its ``outs``); SpatialError if there is none."""
    folder = Path(folder)
    for cand in (folder, folder / "outs"):
        if (cand / "spatial").is_dir():
            return cand
    raise SpatialError(f"{folder}: not a Space Ranger output folder (no spatial/ subfolder, nor outs/spatial/)")


def is_spaceranger_folder(folder: str | os.PathLike) -> bool:
    """True when `folder` (or its outs/) holds spatial/ with spot positions and a count matrix."""
    try:
        outs = spaceranger_outs(folder)
    except SpatialError:
        return False
    has_positions = any((outs / "spatial" / name).is_file() for name in POSITION_FILES)
    return has_positions and any(outs.glob("*feature_bc_matrix.h5"))


def read_positions(spatial_dir: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """Spot table indexed by barcode (in_tissue, array_row, array_col, pxl_row/col_in_fullres) and its file."""
    spatial_dir = Path(spatial_dir)
    path = next((spatial_dir / n for n in POSITION_FILES if (spatial_dir / n).is_file()), None)
    if path is None:
        raise SpatialError(f"{spatial_dir}: no spot positions; expected one of {', '.join(POSITION_FILES)}")
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        elif path.name == "tissue_positions_list.csv":  # Space Ranger 1.x: no header row
            table = pd.read_csv(path, header=None, names=POSITION_COLUMNS)
        else:
            table = pd.read_csv(path)
    except Exception as exc:  # pandas / pyarrow raise many types on bad files
        raise SpatialError(f"{path}: cannot read spot positions ({exc})") from exc
    missing = [c for c in POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise SpatialError(f"{path}: columns {missing} missing; expected {POSITION_COLUMNS}, found {list(table.columns)}")
    table = table.set_index(table["barcode"].astype(str))[POSITION_COLUMNS[1:]]
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        col = numeric.columns[numeric.isna().any()][0]
        raise SpatialError(f"{path}: column {col!r} holds non-numeric values (first at barcode "
                           f"{numeric.index[numeric[col].isna()][0]})")
    if not numeric["in_tissue"].isin((0, 1)).all():
        raise SpatialError(f"{path}: column 'in_tissue' must be 0 or 1")
    return numeric, path


def read_scalefactors(spatial_dir: Path) -> dict[str, float]:
    """scalefactors_json.json with its three required keys checked (positive numbers)."""
    path = spatial_dir / "scalefactors_json.json"
    try:
        factors = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpatialError(f"{path}: cannot read the scale factors ({exc})") from exc
    for key in SCALEFACTOR_KEYS:
        value = factors.get(key)
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise SpatialError(f"{path}: {key!r} must be a positive number, found {value!r}")
    return {k: float(v) for k, v in factors.items() if isinstance(v, (int, float))}


def read_slide_transform_file(outs: Path) -> np.ndarray | None:
    """The 3x3 Visium -> slide affine from slide_transform.json beside spatial/ (or its parent), or None."""
    for cand in (outs / SLIDE_TRANSFORM_FILE, outs.parent / SLIDE_TRANSFORM_FILE):
        if cand.is_file():
            try:
                payload = json.loads(cand.read_text())
            except ValueError as exc:
                raise SpatialError(f"{cand}: not valid JSON ({exc})") from exc
            matrix = payload.get("matrix") if isinstance(payload, dict) else payload
            return check_slide_transform(matrix, str(cand))
    return None


def check_slide_transform(matrix: object, where: str) -> np.ndarray:
    """A 3x3 finite, invertible affine with last row (0, 0, 1) as float64; SpatialError naming `where`."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpatialError(f"{where}: slide transform is not a numeric 3x3 matrix ({exc})") from exc
    if m.shape != (3, 3) or not np.isfinite(m).all():
        raise SpatialError(f"{where}: slide transform must be a finite 3x3 matrix, found shape {m.shape}")
    if not np.allclose(m[2], (0.0, 0.0, 1.0)):
        raise SpatialError(f"{where}: slide transform's last row must be [0, 0, 1] (an affine), found {m[2].tolist()}")
    if abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise SpatialError(f"{where}: slide transform is singular")
    return m


def _read_image(path: Path) -> np.ndarray | None:
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise SpatialError(f"{path}: cannot read the tissue image ({exc})") from exc


def _h5_library_id(path: Path) -> str | None:
    """The sample name Space Ranger stores in the matrix's `library_ids` attribute (None when absent or the
    placeholder 'custom')."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ids = f.attrs.get("library_ids")
    except OSError:
        return None  # _read_counts reports the unreadable file
    if ids is None or len(ids) != 1:
        return None
    name = ids[0].decode() if isinstance(ids[0], bytes) else str(ids[0])
    return None if name in ("", "custom") else name


def check_sparse_matrix(path: Path) -> None:
    """SpatialError naming the file and dataset unless the 10x HDF5 matrix's CSC arrays are consistent:
    indptr starts at 0, never decreases and ends at len(indices) == len(data), one entry per barcode + 1, and
    every index lies inside the feature count (the checks scipy's sparse indexing assumes without looking)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["matrix"]
            n_features, n_barcodes = (int(v) for v in group["shape"][()])
            indptr, indices = group["indptr"][()], group["indices"][()]
            n_data = int(group["data"].shape[0])
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise SpatialError(f"{path}: not a readable 10x feature-barcode matrix ({type(exc).__name__}: {exc})") from exc
    problems = compressed_index_problems(indptr, indices, n_data, n_barcodes, n_features,
                                         prefix="matrix/", major="barcodes", minor="feature")
    if problems:
        raise SpatialError(f"{path}: corrupt 10x feature-barcode matrix: " + "; ".join(problems))


def compressed_index_problems(indptr: np.ndarray, indices: np.ndarray, n_data: int, n_major: int, n_minor: int,
                              *, prefix: str = "", major: str = "rows", minor: str = "column") -> list[str]:
    """What is wrong with a CSR/CSC matrix's arrays (empty when consistent): indptr has ``n_major`` + 1
    non-decreasing offsets from 0 to len(indices) == ``n_data``, every index lies in [0, ``n_minor``).

    scipy's sparse routines assume all of this without looking and crash (a segfault) when it is false.
    """
    problems = []
    if indptr.ndim != 1 or indptr.shape[0] != n_major + 1:
        problems.append(f"{prefix}indptr has {indptr.size} entries, expected {n_major + 1} ({major} + 1)")
    elif indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr.astype(np.int64)) < 0):
        problems.append(f"{prefix}indptr is not a non-decreasing offset array from 0 to len(indices)")
    if indices.shape[0] != n_data:
        problems.append(f"{prefix}indices has {indices.shape[0]} entries, {prefix}data {n_data}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_minor):
        problems.append(f"{prefix}indices hold values outside [0, {n_minor}) (the {minor} count)")
    return problems


def _read_counts(outs: Path, count_file: str) -> ad.AnnData:
    """Spots x genes from the 10x HDF5 matrix through scanpy's reader (genes named by symbol, made unique)."""
    import scanpy as sc

    path = outs / count_file
    if not path.is_file():
        raise SpatialError(f"{path}: count matrix not found")
    check_sparse_matrix(path)  # corrupt index arrays crash native code (a segfault), so look before reading
    try:
        adata = sc.read_10x_h5(path)
    except Exception as exc:  # h5py / scanpy raise many types on bad files
        raise SpatialError(f"{path}: cannot read the 10x feature-barcode matrix ({exc})") from exc
    adata.var_names_make_unique()
    return adata


def read_spaceranger(
    folder: str | os.PathLike,
    *,
    library_id: str | None = None,
    count_file: str = COUNT_FILE,
    load_images: bool = True,
    in_tissue_only: bool = False,
    reader: str = "fusionrx",
) -> ad.AnnData:
    """Read a Space Ranger output folder into AnnData.

    X = integer UMI counts (float32 CSR); obs in_tissue / array_row / array_col; obsm['spatial'] = (x, y)
    full-resolution image px (x = pxl_col_in_fullres); uns['spatial'][library_id] = {'images': {'hires',
    'lowres'} uint8 RGB, 'scalefactors', 'metadata'}; uns['library_id']; uns['slide_transform'] when
    slide_transform.json exists. library_id defaults to the matrix's library_ids attribute, else the folder
    name (the outs' parent for an outs folder). reader='scanpy' uses scanpy's (deprecated) read_visium for csv positions
    and normalises its output the same way; 'fusionrx' (default) reads the files directly, parquet too.
    """
    outs = spaceranger_outs(folder)
    spatial_dir = outs / "spatial"
    folder_name = outs.parent.name if outs.name == "outs" else outs.name
    library_id = library_id or _h5_library_id(outs / count_file) or folder_name
    factors = read_scalefactors(spatial_dir)
    positions, pos_file = read_positions(spatial_dir)
    if reader == "scanpy":
        adata = _read_with_scanpy(outs, count_file, pos_file)
    elif reader == "fusionrx":
        adata = _read_counts(outs, count_file)
    else:
        raise SpatialError(f"reader={reader!r}: expected 'fusionrx' or 'scanpy'")
    absent = adata.obs_names.difference(positions.index)
    if len(absent):
        raise SpatialError(f"{pos_file}: {len(absent)} barcode(s) of {outs / count_file} have no position "
                           f"(first {absent[0]!r})")
    spots = positions.loc[adata.obs_names]
    adata.obs = pd.DataFrame({c: spots[c].astype(np.int64).to_numpy() for c in ("in_tissue", "array_row", "array_col")},
                             index=adata.obs_names)
    adata.obsm["spatial"] = spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    x = adata.X
    if not _integer_counts(x):
        raise SpatialError(f"{outs / count_file}: counts are not non-negative integers")
    adata.X = sp.csr_matrix(x, dtype=np.float32)
    images = {}
    if load_images:
        for res in ("hires", "lowres"):
            img = _read_image(spatial_dir / f"tissue_{res}_image.png")
            if img is not None:
                images[res] = img
    adata.uns["spatial"] = {library_id: {"images": images, "scalefactors": factors,
                                         "metadata": {"source": "spaceranger", "positions_file": pos_file.name}}}
    adata.uns["library_id"] = library_id
    transform = read_slide_transform_file(outs)
    if transform is not None:
        adata.uns[SLIDE_TRANSFORM_KEY] = transform
    if in_tissue_only:
        adata = adata[adata.obs["in_tissue"].to_numpy() == 1].copy()
    return adata


def _read_with_scanpy(outs: Path, count_file: str, pos_file: Path) -> ad.AnnData:
    """Counts through scanpy.read_visium (csv positions only); SpatialError if scanpy lacks it or fails."""
    import scanpy as sc

    read_visium = getattr(sc, "read_visium", None)
    if read_visium is None or pos_file.suffix == ".parquet":
        raise SpatialError(f"{outs}: scanpy {sc.__version__} cannot read {pos_file.name}; use reader='fusionrx'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "Use squidpy.read.visium instead"
            adata = read_visium(outs, count_file=count_file, load_images=False)
    except Exception as exc:
        raise SpatialError(f"{outs}: scanpy.read_visium failed ({exc})") from exc
    adata.var_names_make_unique()
    return ad.AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names), var=adata.var)


def _integer_counts(x: object) -> bool:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return bool(np.isfinite(data).all() and (data >= 0).all() and np.array_equal(data, np.round(data)))
