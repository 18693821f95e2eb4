"""DICOM series -> HU volume, slices/s: FusionRx's reader vs a plain pydicom loop vs SimpleITK's series reader.

Usage: PYTHONPATH=. python bench/dicom_bench.py [--out bench/results_dicom.json] [--slices 300] [--repeats 5]
                                              [--sitk-threads 1]
Series: the real STS_001 CT and GE whole-body PET in ../shared/realdata (when present) and a generated
512x512xN CT. Every method's volume is checked against the others before timing. Repeats are interleaved
(A, B, C, A, B, C, ...) and the best time of each kept, so a busy shared machine penalises all alike. The
1-minute load average is recorded before and after: compare figures only at a similar load. SimpleITK runs
on --sitk-threads threads (default 1, as FusionRx and the pydicom loop use one core; 0 keeps its default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
REALDATA = (ROOT / ".." / "shared" / "realdata").resolve()


def plain_pydicom(directory: Path) -> np.ndarray:
    """Baseline: read every file, sort by ImagePositionPatient z, stack pixel_array * slope + intercept."""
    slices = [pydicom.dcmread(f) for f in sorted(directory.iterdir())]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                     for d in slices])


def simpleitk(directory: Path) -> np.ndarray:
    """SimpleITK ImageSeriesReader (GDCM sorts by position and applies the rescale), as a numpy array."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    return sitk.GetArrayFromImage(reader.Execute()).astype(np.float32, copy=False)


def fusionrx(directory: Path) -> np.ndarray:
    """FusionRx: imaging.dicom_series.read_dicom_series (geometry checks, affine, units)."""
    from imaging.dicom_series import read_dicom_series

    return read_dicom_series(directory).array


def write_generated_ct(out: Path, n_slices: int, seed: int = 0) -> Path:
    """A 512x512xN CT series (int16, slope 1, intercept -1024, 1.25 mm slices) in Explicit VR Little Endian."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 230.0) ** 2 < 1
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "BENCH", study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", n_slices - k  # names and numbers run against z
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-250", "-250", f"{1.25 * k:.2f}"]
        ds.PixelSpacing, ds.SliceThickness = ["0.9765625", "0.9765625"], "1.25"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 512, 512, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        hu = np.where(body, 40 + rng.normal(0, 20, (512, 512)), -1000)
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        ds.save_as(out / f"{n_slices - k:05d}", enforce_file_format=True)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal HU volumes, allowing the slice axis to run the other way."""
    return a.shape == b.shape and (np.allclose(a, b, atol=1e-3) or np.allclose(a, b[::-1], atol=1e-3))


def bench_series(name: str, directory: Path, repeats: int) -> dict:
    """Best-of-`repeats` slices/s of each method on one series (interleaved), after an agreement check."""
    methods = {"fusionrx": fusionrx, "pydicom_loop": plain_pydicom, "simpleitk": simpleitk}
    arrays = {m: fn(directory) for m, fn in methods.items()}  # also warms the page cache
    agree = {m: _same(arrays["fusionrx"], arrays[m]) for m in methods}
    if not all(agree.values()):
        raise RuntimeError(f"{name}: methods disagree on the HU volume: {agree}")
    best = {m: float("inf") for m in methods}
    best_cpu = dict(best)  # process CPU seconds (all threads): on a loaded machine, what a quiet one would take
    for _ in range(repeats):
        for m, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(directory)
            best[m] = min(best[m], time.perf_counter() - t0)
            best_cpu[m] = min(best_cpu[m], time.process_time() - c0)
    n = arrays["fusionrx"].shape[0]
    rate = {m: n / best[m] for m in methods}
    return {"series": name, "slices": n, "shape": list(arrays["fusionrx"].shape), "slices_per_s": rate,
            "best_s": best, "best_cpu_s": best_cpu, "ratio_vs_pydicom_loop": rate["fusionrx"] / rate["pydicom_loop"],
            "ratio_vs_simpleitk": rate["fusionrx"] / rate["simpleitk"],
            "cpu_ratio_vs_simpleitk": best_cpu["simpleitk"] / best_cpu["fusionrx"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_dicom.json"))
    parser.add_argument("--slices", type=int, default=300, help="slices of the generated 512x512 series")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sitk-threads", type=int, default=1, help="SimpleITK threads (0: its default)")
    args = parser.parse_args()
    import SimpleITK as sitk

    if args.sitk_threads > 0:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.sitk_threads)
    load_before = os.getloadavg()
    print(f"pydicom {pydicom.__version__}, SimpleITK {sitk.Version_VersionString()} "
          f"({sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads), numpy {np.__version__}; "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)

    rows = []
    real = {"STS_001 CT (real, GE, 202x198)": REALDATA / "dicom" / "sts_cropped" / "STS_001" / "CT" / "image",
            "STS_001 PET (real, GE whole body, 128x128)": REALDATA / "dicom" / "sts_raw_pet" / "STS_001" / "image"}
    for name, directory in real.items():
        if directory.is_dir():
            rows.append(bench_series(name, directory, args.repeats))
        else:
            print(f"skipped {name}: {directory} absent")
    with tempfile.TemporaryDirectory() as tmp:
        gen = write_generated_ct(Path(tmp) / "ct", args.slices)
        rows.append(bench_series(f"generated CT 512x512x{args.slices}", gen, args.repeats))

    print(f"{'series':44s} {'slices':>6s} {'FusionRx':>10s} {'pydicom':>10s} {'SimpleITK':>10s} "
          f"{'vs pydicom':>10s} {'vs SITK':>8s}   (slices/s)")
    for r in rows:
        s = r["slices_per_s"]
        print(f"{r['series']:44s} {r['slices']:6d} {s['fusionrx']:10.1f} {s['pydicom_loop']:10.1f} "
              f"{s['simpleitk']:10.1f} {r['ratio_vs_pydicom_loop']:9.2f}x {r['ratio_vs_simpleitk']:7.2f}x   "
              f"CPU s: {r['best_cpu_s']['fusionrx']:.3f} / {r['best_cpu_s']['pydicom_loop']:.3f} / "
              f"{r['best_cpu_s']['simpleitk']:.3f} ({r['cpu_ratio_vs_simpleitk']:.2f}x)")
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    result = {"benchmark": "dicom_series_to_hu", "unit": "slices/s", "repeats": args.repeats,
              "load_avg_before": list(load_before), "load_avg_after": list(load_after),
              "command": f"PYTHONPATH=. python bench/dicom_bench.py --slices {args.slices} --repeats {args.repeats} "
                         f"--sitk-threads {args.sitk_threads}",
              "machine": platform.platform(), "python": platform.python_version(),
              "pydicom": pydicom.__version__, "simpleitk": sitk.Version_VersionString(),
              "simpleitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), "rows": rows}
    out = Path(args.out)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
