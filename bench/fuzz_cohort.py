"""Fuzz every per-patient door: corrupt files of a generated cohort, scan and run it, check each is named.

Usage: python bench/fuzz_cohort.py --patients 16 --files 24 --seed 0 [--out DIR] [--keep]

Generates a cohort with the synthetic generator, damages ``--files`` files chosen at random across the
doors (DICOM slices, slides, MAF, copy number, STAR counts, spatial h5ad, Space Ranger matrices) with a
random kind of damage, then runs ``fusionrx scan`` and ``fusionrx run`` as subprocesses (a segfault shows as
a negative exit code). Each damaged file must be named (run record ``skipped``, scan ``problems`` /
``unrecognised`` / catalog notes) or verified harmless: the door's reader, run in a child process on the
damaged file and on a pristine copy, returns the same content. Anything else, or a run that does not exit
0, is a finding: printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# door -> glob patterns (relative to the cohort root) of the files it reads
DOORS: dict[str, tuple[str, ...]] = {
    "dicom": ("imaging/**/*.dcm",),
    "slide": ("slides/*.tiff",),
    "maf": ("omics/**/*.maf.gz",),
    "copy_number": ("omics/**/*gene_level_copy_number*.tsv",),
    "star_counts": ("omics/**/*star_gene_counts.tsv",),
    "h5ad": ("spatial/*.h5ad",),
    "spaceranger": ("spatial/**/filtered_feature_bc_matrix.h5",),
}
KINDS = ("truncate", "zero_head", "empty", "html", "random_mid")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><h1>502 Bad Gateway</h1><p>The proxy could not reach the file server.</p></body></html>\n")
TINY_CONFIG = (Path(__file__).resolve().parents[1] / "flows" / "synthetic" / "tiny_run.yaml").read_text()


@dataclass
class Damage:
    """One damaged file: its door, path relative to the cohort, the kind of damage and the bytes touched."""

    door: str
    file: str
    kind: str
    detail: str
    named: str = ""     # where the run or the scan names it
    harmless: str = ""  # why it is harmless when it is not named
    finding: str = ""


def candidates(root: Path) -> dict[str, list[str]]:
    """Every file of each door in the cohort, relative to ``root``, sorted."""
    out = {}
    for door, patterns in DOORS.items():
        files = sorted({str(p.relative_to(root)) for pat in patterns for p in root.glob(pat) if p.is_file()})
        if files:
            out[door] = files
    return out


def corrupt(path: Path, kind: str, rng: np.random.Generator) -> str:
    """Damage ``path`` in place; a one-line description of what was done."""
    data = path.read_bytes()
    n = len(data)
    if kind == "truncate":
        cut = int(rng.integers(1, max(2, n - 1)))
        path.write_bytes(data[:cut])
        return f"truncated to {cut} of {n} bytes"
    if kind == "zero_head":
        path.write_bytes(b"\0" * min(1024, n) + data[1024:])
        return f"first {min(1024, n)} bytes zeroed"
    if kind == "empty":
        path.write_bytes(b"")
        return f"emptied ({n} bytes)"
    if kind == "html":
        path.write_bytes(HTML_PAGE)
        return f"replaced by an HTML error page ({n} bytes)"
    if kind == "random_mid":
        length = int(min(max(64, n // 20), 4096))
        start = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4 - length)))
        junk = rng.integers(0, 256, size=min(length, n - start), dtype=np.uint8).tobytes()
        path.write_bytes(data[:start] + junk + data[start + len(junk):])
        return f"{len(junk)} random bytes at offset {start} of {n}"
    raise ValueError(f"unknown corruption kind {kind!r}")


def choose(root: Path, n_files: int, rng: np.random.Generator,
           plan: list[tuple[str, str]] | None = None) -> list[Damage]:
    """Damage ``n_files`` files picked at random (door first, then file), or the given (door, kind) plan."""
    files = candidates(root)
    doors = sorted(files)
    picks = plan or [(doors[int(rng.integers(len(doors)))], KINDS[int(rng.integers(len(KINDS)))])
                     for _ in range(n_files)]
    out: list[Damage] = []
    for door, kind in picks:
        left = [f for f in files.get(door, []) if f not in {d.file for d in out}]
        if not left:
            continue
        rel = left[int(rng.integers(len(left)))]
        out.append(Damage(door, rel, kind, corrupt(root / rel, kind, rng)))
    return out


# Each door's reader, run in a child process on one file: prints a SHA-256 of what it read.
READ_CHILD = r"""
import hashlib, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
door, path = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
def add(a):
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.dtype, a.shape)).encode()); h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
if door == "dicom":
    from imaging.dicom_frames import read_image, stored_pixels
    from pathlib import Path
    ds = read_image(path, fast=False)
    add(stored_pixels(ds, Path(path)))
elif door == "slide":
    from imaging.slide import open_slide
    s = open_slide(path)
    for lvl, (w, hh) in enumerate(s.level_dimensions):
        add(np.asarray(s.read_region((0, 0), lvl, (w, hh))))
elif door == "maf":
    from omics.gdc import read_maf
    add(read_maf(path).to_numpy())
elif door == "copy_number":
    from omics.gdc_download import read_gene_level_copy_number
    add(read_gene_level_copy_number(path).to_numpy())
elif door == "star_counts":
    from omics.gdc import read_star_counts
    add(read_star_counts(path).to_numpy())
elif door == "h5ad":
    from omics.spatial import read_spatial
    a = read_spatial(path)
    add(a.X.toarray() if hasattr(a.X, "toarray") else a.X); add(a.obsm["spatial"])
elif door == "spaceranger":
    from pathlib import Path
    from omics.spaceranger import read_spaceranger
    a = read_spaceranger(Path(path).parent)
    add(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
print(h.hexdigest())
"""


def read_digest(door: str, path: Path) -> tuple[int, str]:
    """(exit code, digest or the error's last line) of the door's reader on ``path``, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", READ_CHILD, door, str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return proc.returncode, (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    return 0, proc.stdout.strip()


def fusionrx(*args: str, log: Path, timeout_s: float = 1800) -> int:
    """Run the CLI in a child process; its exit code (negative: killed by that signal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cli = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]
    with open(log, "w") as fh:
        return subprocess.run(cli + list(args), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout_s).returncode


def _mentions(records: list[tuple[str, str]], data: Path, rel: str) -> str:
    """The first record (where, text) whose text names the file (absolute or relative path)."""
    for where, text in records:
        if str(data / rel) in text or rel in text:
            return f"{where}: {text[:160]}"
    return ""


def scan_and_run(data: Path, work: Path, config: Path) -> dict:
    """``fusionrx scan`` then ``fusionrx run`` over ``data``; exit codes, the scan result and the run record."""
    catalog, store = work / "catalog.yaml", work / "store"
    scan_json = work / "scan.json"
    scan_rc = fusionrx("scan", str(data), "--out", str(catalog), "--format", "json", log=scan_json)
    scan = {}
    if scan_rc == 0:
        text = scan_json.read_text()
        scan = json.loads(text[text.index("{"):])
    run_rc = fusionrx("run", "--catalog", str(catalog), "--store", str(store), "--config", str(config),
                      log=work / "run.log") if scan_rc == 0 else None
    records = sorted(p for p in (store / "runs").glob("*.json") if p.name.count(".") == 1) if store.is_dir() else []
    run = json.loads(records[-1].read_text()) if records else {}
    return {"scan_rc": scan_rc, "run_rc": run_rc, "scan": scan, "run": run, "store": store,
            "run_log": work / "run.log", "scan_log": scan_json}


def named_records(result: dict) -> list[tuple[str, str]]:
    """Every (where, text) that can name a file: run skips, scan problems, unrecognised files, catalog notes."""
    scan, run = result["scan"], result["run"]
    recs = [("run skipped", f"{s.get('file', '')} {s.get('error', '')}") for s in run.get("skipped", [])]
    recs += [("scan problem", f"{p.get('path', '')} {p.get('error', '')}") for p in scan.get("problems", [])]
    recs += [("scan unrecognised", f"{u.get('path', u) if isinstance(u, dict) else u}")
             for u in scan.get("unrecognised", [])]
    recs += [("catalog note", f"{n.get('path', '')} {n.get('error', '')}")
             for n in scan.get("catalog", {}).get("notes", [])]
    return recs


def judge(damages: list[Damage], data: Path, pristine: Path, result: dict) -> list[str]:
    """Fill each damage's named / harmless / finding; the list of findings (run-level ones included)."""
    findings = []
    if result["scan_rc"] != 0:
        findings.append(f"scan exited {result['scan_rc']} (see {result['scan_log']})")
    elif result["run_rc"] != 0:
        findings.append(f"run exited {result['run_rc']} (see {result['run_log']})")
    recs = named_records(result)
    for d in damages:
        d.named = _mentions(recs, data, d.file)
        if d.named:
            continue
        rc_bad, got = read_digest(d.door, data / d.file)
        rc_ok, want = read_digest(d.door, pristine / d.file)
        if rc_bad == 0 and rc_ok == 0 and got == want:
            d.harmless = "the reader returns the same content as from the undamaged file (damaged bytes not read)"
        elif rc_bad == 0:
            d.finding = "not named; the reader returns different content without an error (silent)"
        else:
            d.finding = f"not named; the reader alone fails with exit {rc_bad}: {got[:200]}"
        if d.finding:
            findings.append(f"{d.door} {d.file} [{d.kind}: {d.detail}]: {d.finding}")
    return findings


def fuzz(out: Path, n_patients: int, n_files: int, seed: int,
         plan: list[tuple[str, str]] | None = None, config_text: str = TINY_CONFIG) -> dict:
    """Generate, damage, scan, run and judge under ``out``; the report as a dict."""
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    pristine, data, work = out / "pristine", out / "data", out / "work"
    if not pristine.is_dir():
        generate_cohort(pristine, CohortConfig(n_patients=n_patients, seed=seed), progress=lambda m: None)
    for d in (data, work):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(pristine, data)
    (data / "data_catalog.yaml").unlink(missing_ok=True)  # the run goes through scan's catalog
    work.mkdir(parents=True)
    config = work / "tiny.yaml"
    config.write_text(config_text)
    damages = choose(data, n_files, np.random.default_rng(seed), plan)
    result = scan_and_run(data, work, config)
    findings = judge(damages, data, pristine, result)
    return {"seed": seed, "scan_rc": result["scan_rc"], "run_rc": result["run_rc"],
            "damages": [asdict(d) for d in damages], "findings": findings,
            "skipped": result["run"].get("skipped", []), "store": str(result["store"])}


def _print(report: dict) -> None:
    print(f"seed {report['seed']}: scan exit {report['scan_rc']}, run exit {report['run_rc']}, "
          f"{len(report['damages'])} damaged file(s)")
    for d in report["damages"]:
        verdict = ("NAMED    " + d["named"]) if d["named"] else ("HARMLESS " + d["harmless"]) if d["harmless"] \
            else ("FINDING  " + d["finding"])
        print(f"  {d['door']:<12} {d['kind']:<10} {d['file']}\n      {d['detail']}\n      {verdict}")
    print(f"{len(report['findings'])} finding(s)")
    for f in report["findings"]:
        print(f"  ! {f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="working folder (kept); default a temporary one, removed")
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    args = ap.parse_args(argv)
    from flows.console import quiet_prefect_env

    quiet_prefect_env()
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="fuzz_cohort_")
        out = Path(tmp.name)
    try:
        report = fuzz(out, args.patients, args.files, args.seed)
    finally:
        if tmp is not None:
            tmp.cleanup()
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
