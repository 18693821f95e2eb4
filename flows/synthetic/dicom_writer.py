"""Synthetic chest CT and FDG-PET DICOM series (pydicom) with a planted lung tumour and a known truth."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from flows.synthetic.identity import FakeIdentity, fake_identity, write_identity

AIR_HU = -1000.0
TISSUE_HU = 40.0
LUNG_HU = -850.0
TUMOUR_HU = 35.0
CT_RESCALE_INTERCEPT = -1024.0
F18_HALF_LIFE_S = 6586.2
LUNG_SUV_FRACTION = 0.3  # lung uptake relative to the soft-tissue background
STUDY_DATE = "20240115"
INJECTION_TIME_S = 9 * 3600.0  # 09:00:00


@dataclass(frozen=True)
class ChestGeometry:
    """Chest phantom in LPS mm: body elliptic cylinder, two lung ellipsoids (x, y, z semi-axes)."""

    centre_mm: tuple[float, float, float]
    body_semi_axes_mm: tuple[float, float]
    lung_centres_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    lung_semi_axes_mm: tuple[float, float, float]
    z_range_mm: tuple[float, float]


def _grid_centre_and_fov(
    shape: tuple[int, int, int], pixel_spacing_mm: tuple[float, float], slice_thickness_mm: float,
    origin_mm: tuple[float, float, float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin of voxel [0,0,0], centre, field of view) in LPS mm for an axial grid (slices, rows, cols)."""
    n_slices, rows, cols = shape
    step = np.array([pixel_spacing_mm[1], pixel_spacing_mm[0], slice_thickness_mm], dtype=np.float64)  # x, y, z
    counts = np.array([cols, rows, n_slices], dtype=np.float64)
    origin = -(counts - 1) / 2 * step if origin_mm is None else np.asarray(origin_mm, dtype=np.float64)
    return origin, origin + (counts - 1) / 2 * step, counts * step


def ct_geometry(
    shape: tuple[int, int, int] = (40, 96, 96),
    pixel_spacing_mm: tuple[float, float] = (2.0, 2.0),
    slice_thickness_mm: float = 3.0,
    origin_mm: tuple[float, float, float] | None = None,
) -> ChestGeometry:
    """Chest phantom fitted to an axial grid (default: the default CT grid, centred on world (0, 0, 0))."""
    _, centre, fov = _grid_centre_and_fov(shape, pixel_spacing_mm, slice_thickness_mm, origin_mm)
    body = (float(0.44 * fov[0]), float(0.32 * fov[1]))
    lung_dx = float(0.2 * fov[0])
    lung_axes = (float(0.155 * fov[0]), float(0.22 * fov[1]), float(0.6 * fov[2]))
    lungs = tuple((float(centre[0] + s * lung_dx), float(centre[1]), float(centre[2])) for s in (-1.0, 1.0))
    z_range = (float(centre[2] - fov[2] / 2), float(centre[2] + fov[2] / 2))
    return ChestGeometry(tuple(float(c) for c in centre), body, lungs, lung_axes, z_range)  # type: ignore[arg-type]


def lung_tumour_centre_mm(
    rng: np.random.Generator, geometry: ChestGeometry, radius_mm: float, margin_mm: float = 4.0
) -> np.ndarray:
    """Random LPS point (mm) where a sphere of `radius_mm` lies inside one lung with `margin_mm` to spare."""
    reach = radius_mm + margin_mm
    inner = np.array(geometry.lung_semi_axes_mm) - reach  # ellipsoid shrunk by reach stays inside the parallel body
    z_lo, z_hi = geometry.z_range_mm[0] + reach, geometry.z_range_mm[1] - reach
    if np.any(inner <= 0) or z_lo >= z_hi:
        raise ValueError(
            f"tumour radius {radius_mm} mm does not fit a lung with semi-axes {geometry.lung_semi_axes_mm}"
        )
    for _ in range(1000):
        lung = np.array(geometry.lung_centres_mm[int(rng.integers(2))])
        u = rng.uniform(-1.0, 1.0, size=3)
        point = lung + u * inner
        if np.sum(u**2) <= 1.0 and z_lo <= point[2] <= z_hi:
            return point
    raise ValueError(f"could not place a {radius_mm} mm tumour inside the lungs")


def _tissue_masks(points_mm: np.ndarray, geometry: ChestGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Body and lung masks for LPS points [..., 3] (mm)."""
    c = np.array(geometry.centre_mm)
    bx, by = geometry.body_semi_axes_mm
    body = ((points_mm[..., 0] - c[0]) / bx) ** 2 + ((points_mm[..., 1] - c[1]) / by) ** 2 <= 1.0
    axes = np.array(geometry.lung_semi_axes_mm)
    lung = np.zeros(points_mm.shape[:-1], dtype=bool)
    for centre in geometry.lung_centres_mm:
        lung |= np.sum(((points_mm - np.array(centre)) / axes) ** 2, axis=-1) <= 1.0
    return body, lung & body


def _grid_points(origin: np.ndarray, shape: tuple[int, int, int], pixel_spacing_mm: tuple[float, float],
                 slice_thickness_mm: float) -> np.ndarray:
    """LPS (x, y, z) mm of every voxel centre, array order [k, j, i, 3], identity orientation."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return np.stack(
        [origin[0] + i * pixel_spacing_mm[1], origin[1] + j * pixel_spacing_mm[0], origin[2] + k * slice_thickness_mm],
        axis=-1,
    )


def _sphere_fraction(points_mm: np.ndarray, step_mm: np.ndarray, centre_mm: np.ndarray, radius_mm: float,
                     sub: int = 4) -> np.ndarray:
    """Fraction of each voxel (centres `points_mm` [k, j, i, 3], size `step_mm` along k, j, i) inside a sphere.

    Supersampled `sub`^3 times, only on the voxels near the sphere; identity orientation (k->z, j->y, i->x).
    """
    half_diag = 0.5 * float(np.linalg.norm(step_mm))
    dist = np.linalg.norm(points_mm - centre_mm, axis=-1)
    fraction = (dist <= radius_mm - half_diag).astype(np.float64)
    edge = np.abs(dist - radius_mm) < half_diag
    if edge.any():
        offs = (np.arange(sub) + 0.5) / sub - 0.5
        dz, dy, dx = np.meshgrid(offs * step_mm[0], offs * step_mm[1], offs * step_mm[2], indexing="ij")
        sub_xyz = np.stack([dx.ravel(), dy.ravel(), dz.ravel()], axis=1)  # [sub^3, 3] in x, y, z
        pts = points_mm[edge][:, None, :] + sub_xyz[None]
        fraction[edge] = np.mean(np.sum((pts - centre_mm) ** 2, axis=-1) <= radius_mm**2, axis=1)
    return fraction


def _uid(*entropy: object) -> str:
    """Deterministic DICOM UID (pydicom root, SHA-512 of the entropy) so reruns write identical files."""
    return generate_uid(entropy_srcs=["|".join(str(e) for e in entropy)])


def study_uid_for(patient_id: str) -> str:
    """StudyInstanceUID shared by the CT and PET of one synthetic patient."""
    return _uid("fusionrx-study", patient_id)


def frame_of_reference_uid_for(patient_id: str) -> str:
    """FrameOfReferenceUID shared by the CT and PET of one synthetic patient (same scanner couch)."""
    return _uid("fusionrx-frame-of-reference", patient_id)


def _ds(value: float) -> str:
    """A number as a valid DICOM DS string (<= 16 characters)."""
    return format_number_as_ds(float(value))


def _time_tm(seconds_of_day: float) -> str:
    """Seconds since midnight as DICOM TM 'HHMMSS.FF'."""
    seconds_of_day %= 86400.0
    hh, rem = divmod(seconds_of_day, 3600.0)
    mm, ss = divmod(rem, 60.0)
    return f"{int(hh):02d}{int(mm):02d}{ss:05.2f}"


def new_instance(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """An empty instance of ``sop_class_uid`` with its file meta (explicit VR little endian) and SOP UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def _base_dataset(
    sop_class_uid: str, sop_instance_uid: str, *, patient_id: str, modality: str, study_uid: str, series_uid: str,
    frame_of_reference_uid: str, series_number: int, series_time: str, identity: FakeIdentity | None = None,
) -> Dataset:
    """Patient / study / series / frame-of-reference modules shared by every slice; the patient's made-up
    name, birth date, address, ... (`identity`, default: the patient id's seed-0 identity) as a hospital's."""
    ds = new_instance(sop_class_uid, sop_instance_uid)
    ds.PatientID = patient_id
    write_identity(ds, identity or fake_identity(patient_id))
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = _time_tm(INJECTION_TIME_S)
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = series_time
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "FusionRx synthetic"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "FFS"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    return ds


def _set_slice_geometry(ds: Dataset, origin: np.ndarray, k: int, slice_thickness_mm: float,
                        pixel_spacing_mm: tuple[float, float], shape: tuple[int, int, int]) -> None:
    """Axial slice k's position (LPS mm), location, pixel spacing, thickness and matrix size."""
    z = origin[2] + k * slice_thickness_mm
    ds.ImagePositionPatient = [_ds(origin[0]), _ds(origin[1]), _ds(z)]
    ds.SliceLocation = _ds(z)
    ds.PixelSpacing = [_ds(pixel_spacing_mm[0]), _ds(pixel_spacing_mm[1])]
    ds.SliceThickness = _ds(slice_thickness_mm)
    ds.Rows, ds.Columns = shape[1], shape[2]


def _series_truth(patient_id: str, out_dir: Path, study_uid: str, series_uid: str, frame_uid: str,
                  shape: tuple[int, int, int], origin: np.ndarray) -> dict:
    """The identifiers and grid every written series reports in its truth dict."""
    return {"patient_id": patient_id, "series_dir": str(out_dir), "study_uid": study_uid,
            "series_uid": series_uid, "frame_of_reference_uid": frame_uid, "shape": tuple(shape),
            "origin_mm": origin.tolist()}


def _slice_name(prefix: str, n: int, naming: str) -> str:
    """File name of slice n: '<prefix>_0001.dcm', or as TCIA downloads name them ('1-001.dcm')."""
    return f"1-{n + 1:03d}.dcm" if naming == "tcia" else f"{prefix}_{n + 1:04d}.dcm"


PHILIPS_PET_PRIVATE_CREATOR = "Philips PET Private Group"
PHILIPS_BQML_PER_COUNT = 3.5  # activity concentration scale factor of the synthetic Philips scanner


def _vendor_values(units: str, suv: np.ndarray, activity_bq_ml: np.ndarray, bq_per_ml_per_suv: float
                   ) -> tuple[np.ndarray, dict | None]:
    """What the pixels store for a vendor's Units (Bq/ml, SUVbw or counts) and the Philips private factors."""
    if units == "BQML":
        return activity_bq_ml, None
    if units == "GML":
        return suv, None
    if units == "CNTS":
        counts = activity_bq_ml / PHILIPS_BQML_PER_COUNT
        return counts, {"suv_scale_factor": PHILIPS_BQML_PER_COUNT / bq_per_ml_per_suv,
                        "activity_concentration_scale_factor": PHILIPS_BQML_PER_COUNT}
    raise ValueError(f"write_pet_series: units must be BQML, GML or CNTS, got {units!r}")


def _write_slices(out_dir: Path, prefix: str, datasets: list[Dataset], naming: str = "modality") -> list[Path]:
    """Write one file per slice (temp then rename); drop stale slices of an earlier run with the same naming."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {_slice_name(prefix, n, naming) for n in range(len(datasets))}
    for stale in out_dir.glob("1-*.dcm" if naming == "tcia" else f"{prefix}_*.dcm"):
        if stale.name not in names:
            stale.unlink()
    paths = []
    for n, ds in enumerate(datasets):
        path = out_dir / _slice_name(prefix, n, naming)
        tmp = out_dir / f".{path.name}.tmp"
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def ct_series_uid(patient_id: str, seed: int) -> str:
    """SeriesInstanceUID of the synthetic CT written with this patient and seed."""
    return _uid("fusionrx-ct-series", patient_id, seed)


def ct_slice_uid(patient_id: str, seed: int, k: int) -> str:
    """SOPInstanceUID of slice k of that CT (RTSTRUCTs reference it)."""
    return _uid("fusionrx-ct-slice", patient_id, seed, k)


def pet_series_uid(patient_id: str, seed: int) -> str:
    """SeriesInstanceUID of the synthetic PET written with this patient and seed."""
    return _uid("fusionrx-pt-series", patient_id, seed)


def write_ct_series(
    out_dir: str | Path,
    *,
    patient_id: str,
    tumour_centre_mm: tuple[float, float, float] | np.ndarray,
    tumour_radius_mm: float,
    seed: int,
    shape: tuple[int, int, int] = (40, 96, 96),
    pixel_spacing_mm: tuple[float, float] = (2.0, 2.0),
    slice_thickness_mm: float = 3.0,
    origin_mm: tuple[float, float, float] | None = None,
    geometry: ChestGeometry | None = None,
    noise_hu: float = 10.0,
    naming: str = "modality",
    identity: FakeIdentity | None = None,
) -> dict:
    """Write a chest CT phantom (air, soft tissue, two lungs, spherical tumour; HU) as one file per slice.

    `shape` is (slices, rows, cols); `origin_mm` the LPS centre of voxel [0, 0, 0] (default: grid
    centred on world (0, 0, 0)). Returns the planted truth (HU per tissue, tumour volume in ml, ...).
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    origin, _, _ = _grid_centre_and_fov(shape, pixel_spacing_mm, slice_thickness_mm, origin_mm)
    geometry = geometry or ct_geometry(shape, pixel_spacing_mm, slice_thickness_mm, origin_mm)
    centre = np.asarray(tumour_centre_mm, dtype=np.float64)
    points = _grid_points(origin, shape, pixel_spacing_mm, slice_thickness_mm)
    body, lung = _tissue_masks(points, geometry)
    tumour = np.sum((points - centre) ** 2, axis=-1) <= tumour_radius_mm**2
    hu = np.full(shape, AIR_HU)
    hu[body] = TISSUE_HU
    hu[lung] = LUNG_HU
    hu[tumour & body] = TUMOUR_HU
    hu += rng.normal(0.0, noise_hu, size=shape)
    stored = np.clip(np.rint(hu - CT_RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)

    study_uid = study_uid_for(patient_id)
    frame_uid = frame_of_reference_uid_for(patient_id)
    series_uid = ct_series_uid(patient_id, seed)
    datasets = []
    for k in range(shape[0]):
        ds = _base_dataset(
            CTImageStorage, ct_slice_uid(patient_id, seed, k), patient_id=patient_id, modality="CT",
            study_uid=study_uid, series_uid=series_uid, frame_of_reference_uid=frame_uid, series_number=2,
            series_time=_time_tm(INJECTION_TIME_S + 3000.0), identity=identity,
        )
        ds.SeriesDescription = "Synthetic chest CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        _set_slice_geometry(ds, origin, k, slice_thickness_mm, pixel_spacing_mm, shape)
        ds.SpacingBetweenSlices = _ds(slice_thickness_mm)
        ds.KVP = "120"
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = _ds(CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.PixelData = stored[k].tobytes()
        datasets.append(ds)
    _write_slices(out_dir, "CT", datasets, naming)

    return {
        **_series_truth(patient_id, out_dir, study_uid, series_uid, frame_uid, shape, origin),
        "tissue_hu": TISSUE_HU,
        "lung_hu": LUNG_HU,
        "air_hu": AIR_HU,
        "tumour_hu": TUMOUR_HU,
        "noise_hu": noise_hu,
        "tumour_centre_mm": centre.tolist(),
        "tumour_radius_mm": float(tumour_radius_mm),
        "tumour_volume_ml": float(4.0 / 3.0 * np.pi * tumour_radius_mm**3 / 1000.0),
        "tumour_voxels": int(np.count_nonzero(tumour & body)),
        "slice_thickness_mm": float(slice_thickness_mm),
        "geometry": asdict(geometry),
    }


def write_pet_series(
    out_dir: str | Path,
    *,
    patient_id: str,
    tumour_centre_mm: tuple[float, float, float] | np.ndarray,
    tumour_radius_mm: float,
    tumour_suv: float,
    background_suv: float = 1.0,
    weight_kg: float,
    dose_bq: float,
    half_life_s: float = F18_HALF_LIFE_S,
    injection_to_scan_s: float,
    seed: int,
    shape: tuple[int, int, int] = (20, 48, 48),
    pixel_spacing_mm: tuple[float, float] = (4.0, 4.0),
    slice_thickness_mm: float = 6.0,
    origin_mm: tuple[float, float, float] | None = None,
    geometry: ChestGeometry | None = None,
    frame_of_reference_uid: str | None = None,
    study_uid: str | None = None,
    noise_fraction: float = 0.0,
    units: str = "BQML",
    naming: str = "modality",
    identity: FakeIdentity | None = None,
) -> dict:
    """Write an FDG-PET phantom (DecayCorrection START, per-slice RescaleSlope) in vendor `units`:
    'BQML' (Bq/ml, GE/Siemens), 'GML' (already SUVbw, g/ml) or 'CNTS' (Philips counts with the
    private SUV and activity-concentration scale factors (7053,1000) and (7053,1009)).

    Activity = SUV * dose decayed to the scan start / weight_g; `geometry` defaults to the chest of
    the default CT grid so PET and CT of one patient overlay through their affines. `naming` 'tcia'
    names the files '1-001.dcm', ...
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    origin, _, _ = _grid_centre_and_fov(shape, pixel_spacing_mm, slice_thickness_mm, origin_mm)
    geometry = geometry or ct_geometry()
    centre = np.asarray(tumour_centre_mm, dtype=np.float64)
    points = _grid_points(origin, shape, pixel_spacing_mm, slice_thickness_mm)
    body, lung = _tissue_masks(points, geometry)
    step_mm = np.array([slice_thickness_mm, pixel_spacing_mm[0], pixel_spacing_mm[1]])
    fraction = _sphere_fraction(points, step_mm, centre, tumour_radius_mm) * body
    suv = np.zeros(shape)
    suv[body] = background_suv
    suv[lung] = LUNG_SUV_FRACTION * background_suv
    suv += fraction * (tumour_suv - suv)  # partial volume: coarse PET voxels on the tumour edge mix both
    if noise_fraction > 0:
        suv *= np.clip(1.0 + rng.normal(0.0, noise_fraction, size=shape), 0.0, None)
    decayed_dose_bq = dose_bq * 2.0 ** (-injection_to_scan_s / half_life_s)
    bq_per_ml_per_suv = decayed_dose_bq / (weight_kg * 1000.0)
    activity = suv * bq_per_ml_per_suv
    stored_quantity, private = _vendor_values(units, suv, activity, bq_per_ml_per_suv)

    study_uid = study_uid or study_uid_for(patient_id)
    frame_uid = frame_of_reference_uid or frame_of_reference_uid_for(patient_id)
    series_uid = pet_series_uid(patient_id, seed)
    series_time = _time_tm(INJECTION_TIME_S + injection_to_scan_s)
    info = Dataset()
    info.Radiopharmaceutical = "Fluorodeoxyglucose"
    info.RadionuclideTotalDose = _ds(dose_bq)
    info.RadionuclideHalfLife = _ds(half_life_s)
    info.RadionuclidePositronFraction = "0.967"
    info.RadiopharmaceuticalStartTime = _time_tm(INJECTION_TIME_S)

    datasets, slopes = [], []
    for k in range(shape[0]):
        ds = _base_dataset(
            PositronEmissionTomographyImageStorage, _uid("fusionrx-pt-slice", patient_id, seed, k),
            patient_id=patient_id, modality="PT", study_uid=study_uid, series_uid=series_uid,
            frame_of_reference_uid=frame_uid, series_number=3, series_time=series_time, identity=identity,
        )
        ds.SeriesDescription = "Synthetic FDG PET"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PatientWeight = _ds(weight_kg)
        ds.AcquisitionDate = STUDY_DATE
        ds.AcquisitionTime = series_time
        ds.Units = units
        if private:
            ds.Manufacturer = "Philips Medical Systems"
            block = ds.private_block(0x7053, PHILIPS_PET_PRIVATE_CREATOR, create=True)
            block.add_new(0x00, "DS", _ds(private["suv_scale_factor"]))
            block.add_new(0x09, "DS", _ds(private["activity_concentration_scale_factor"]))
        elif units == "GML":
            ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.RandomsCorrectionMethod = "NONE"
        ds.NumberOfSlices = shape[0]
        ds.ImageIndex = k + 1
        ds.InstanceNumber = k + 1
        ds.DecayFactor = "1"
        ds.FrameReferenceTime = "0"
        ds.RadiopharmaceuticalInformationSequence = [info]
        _set_slice_geometry(ds, origin, k, slice_thickness_mm, pixel_spacing_mm, shape)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        # Per-slice slope: the slice maximum maps near the int16 top (32000 leaves headroom for DS rounding).
        slice_max = float(stored_quantity[k].max())
        slope = _ds(slice_max / 32000.0) if slice_max > 0 else "1"
        stored = np.clip(np.rint(stored_quantity[k] / float(slope)), 0, 32767).astype(np.int16)
        ds.RescaleSlope = slope
        ds.RescaleIntercept = "0"
        ds.PixelData = stored.tobytes()
        datasets.append(ds)
        slopes.append(float(slope))
    _write_slices(out_dir, "PT", datasets, naming)

    return {
        **_series_truth(patient_id, out_dir, study_uid, series_uid, frame_uid, shape, origin),
        "tumour_centre_mm": centre.tolist(),
        "tumour_radius_mm": float(tumour_radius_mm),
        "tumour_volume_ml": float(4.0 / 3.0 * np.pi * tumour_radius_mm**3 / 1000.0),
        "tumour_suv": float(tumour_suv),
        "background_suv": float(background_suv),
        "lung_suv": float(LUNG_SUV_FRACTION * background_suv),
        "weight_kg": float(weight_kg),
        "dose_bq": float(dose_bq),
        "half_life_s": float(half_life_s),
        "injection_to_scan_s": float(injection_to_scan_s),
        "decayed_dose_bq": float(decayed_dose_bq),
        "bq_per_ml_per_suv": float(bq_per_ml_per_suv),
        "tumour_bq_per_ml": float(tumour_suv * bq_per_ml_per_suv),
        "rescale_slopes": slopes,
        "units": units,
        **({"philips_private": private} if private else {}),
        "tumour_voxels_equivalent": float(fraction.sum()),
    }
