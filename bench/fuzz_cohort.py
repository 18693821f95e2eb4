"""Fuzz every per-patient door: corrupt files of a generated cohort, scan and run it, check each is named.

Usage: python bench/fuzz_cohort.py --patients 16 --files 24 --seeds 0 1 2 [--victims 8] [--imaging-only]
       [--out DIR] [--json F]

Generates a cohort once and runs it clean (``fusionrx scan`` + ``fusionrx run``, the baseline). Then, per
seed, damages ``--files`` files of ``--victims`` patients drawn at random, across the doors (DICOM slices,
slides, MAF, copy number, STAR counts, spatial h5ad, Space Ranger matrices), each with a random kind of
damage (``KINDS``; the plain tables also ``cut_lines``: cut at a line boundary), and runs scan and run again
as subprocesses (a segfault shows as a negative exit code). Each damaged file is judged:

- NAMED: the run summary (``skipped``) names it with its reason, or else the scan (problems, unrecognised
  files, catalog notes: the file never reaches the run); a DICOM slice may be named through its series.
- HARMLESS: not named, but the door's reader returns exactly the same content as from the pristine file
  (the damaged bytes are never read).
- UNDETECTABLE: a stretch of random bytes wholly inside the uncompressed pixel data of a DICOM slice: DICOM
  has no checksum, the slice reads as other valid pixel values (``fuzz_outputs.pixel_data_only``). Counted
  apart, never as named; the patient's outputs are not compared.
- MASKED: not named, and its reader fails on it alone, but a damaged input of the same door and patient
  failed first and is named in the run summary (a patient's DICOM study stops at its first bad slice): it is
  named once that one is replaced. Counted apart, not as named.
- FINDING: anything else (not named and read differently, or the reader fails where the run said nothing).

Run-level findings: scan or run exit status not in ``OK_EXITS`` (a crash is negative), a Python traceback
in their output, any output of an untouched patient (no damaged file) that differs from the clean run
(``fuzz_outputs.untouched_changes``), and, when only imaging inputs were damaged (DICOM slices, and slides
of patients without a spatial sample: ``imaging_only``), any difference between the run's target ranking
and the clean run's (``ranking_changes``: genes, ranks, scores and every evidence type's score). With
``--imaging-only`` every seed damages imaging inputs only, so every seed checks the ranking. Prints per
seed and in total: tried, named, crashes, untouched outputs changed, rankings compared and changed. Exit
status 1 when there is any finding.
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
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fuzz_outputs import file_patients, isolated_digest, patient_of, pixel_data_only, untouched_changes

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
IMAGING_DOORS = ("dicom", "slide")  # neither feeds an expression-derived evidence type ...
SPATIAL_DOORS = ("h5ad", "spaceranger")  # ... except the slide of a spatial sample: it places its tumour region
KINDS = ("truncate", "zero_head", "empty", "html", "random_mid")
TEXT_DOORS = ("copy_number", "star_counts")  # plain tables: also cut at a line boundary
TEXT_KINDS = KINDS + ("cut_lines",)
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><h1>502 Bad Gateway</h1><p>The proxy could not reach the file server.</p></body></html>\n")
TINY_CONFIG = (ROOT / "flows" / "synthetic" / "tiny_run.yaml").read_text()
OK_EXITS = (0,)  # `fusionrx scan` / `run` exit 0 when they complete, bad inputs reported and skipped
TRACEBACK = "Traceback (most recent call last)"


def frozen_encoders_available() -> bool:
    """True when the shipped frozen tile / volume encoders are installed (their manifest reads)."""
    try:
        from imaging.frozen_encoders import manifest

        manifest()
    except Exception:  # noqa: BLE001 - absent module, absent or bad manifest: not available
        return False
    return True


def harness_config(text: str = TINY_CONFIG) -> str:
    """The run config of every run of the harness: ``text`` plus, where the run config knows them and
    ``text`` does not set them, ``verify_slides: true`` (every tile of every slide decoded at ingest) and,
    without installed frozen encoders, cohort-trained ones (then only encoder-independent outputs of the
    untouched patients can be compared: see bench/fuzz_outputs.py)."""
    from flows.config import RunConfig

    fields = RunConfig.__dataclass_fields__
    extra = {"verify_slides": "true"}
    if not frozen_encoders_available():
        extra |= {"volume_encoder": "cohort", "tile_encoder": "cohort"}
    keys = {line.split(":")[0].strip() for line in text.splitlines() if ":" in line and not line.startswith("#")}
    return text + "".join(f"{k}: {v}\n" for k, v in extra.items() if k in fields and k not in keys)


def ok_exits() -> tuple[int, ...]:
    """Exit statuses of a completed run: 0, and the CLI's 'completed, inputs skipped' status if it has one."""
    from flows import cli

    extra = getattr(cli, "EXIT_SKIPPED", None)
    return OK_EXITS + ((int(extra),) if extra is not None else ())


@dataclass
class Damage:
    """One damaged file: its door, path relative to the cohort, patient, the kind of damage, the bytes
    touched (start, length; -1 when the file was replaced) and the verdict."""

    door: str
    file: str
    kind: str
    detail: str
    patient: str = ""
    start: int = -1
    length: int = 0
    named: str = ""         # where the run or the scan names it
    named_by: str = ""      # "run" or "scan"
    harmless: str = ""      # why it is harmless when it is not named
    undetectable: str = ""  # why no reader can tell (DICOM pixel data)
    masked: str = ""        # which damage of the same patient's input, named, stopped the read before this file
    finding: str = ""


def candidates(root: Path, patients: set[str] | None = None, imaging: bool = False) -> dict[str, list[str]]:
    """Every file of each door in the cohort (relative to ``root``, sorted), only ``patients``' when given;
    with ``imaging``, only the imaging inputs that no evidence type of the ranking reads (``imaging_only``)."""
    gdc = file_patients(root) if patients is not None or imaging else {}
    out = {}
    for door, patterns in DOORS.items():
        files = sorted({str(p.relative_to(root)) for pat in patterns for p in root.glob(pat) if p.is_file()})
        if patients is not None:
            files = [f for f in files if patient_of(f, gdc) in patients]
        if files:
            out[door] = files
    if imaging:
        spatial = spatial_patients(root)
        out = {door: [f for f in files if door == "dicom" or patient_of(f, gdc) not in spatial]
               for door, files in out.items() if door in IMAGING_DOORS}
        out = {door: files for door, files in out.items() if files}
    return out


def spatial_patients(root: Path) -> set[str]:
    """Patients with a spatial sample (h5ad or Space Ranger folder) in the cohort at ``root``."""
    return {p for door in SPATIAL_DOORS for pat in DOORS[door] for f in root.glob(pat)
            for p in [patient_of(str(f.relative_to(root)), {})] if p}


def imaging_only(damages: list[Damage], root: Path) -> bool:
    """True when every damaged file is an imaging input that no evidence type of the target ranking reads: a
    DICOM slice (radiology feeds only the fusion experiments), or the slide of a patient without a spatial
    sample (a spatial sample's slide places its tumour region, spatial evidence). The ranking of such a run
    must equal the clean run's (issue 18): its model evidence comes from an expression-only model."""
    spatial = spatial_patients(root)
    return bool(damages) and all(d.door == "dicom" or (d.door == "slide" and d.patient not in spatial)
                                 for d in damages)


def corrupt(path: Path, kind: str, rng: np.random.Generator) -> tuple[str, int, int]:
    """Damage ``path`` in place; (a one-line description, first byte changed, bytes changed; -1 / 0 when
    the file was cut or replaced)."""
    data = path.read_bytes()
    n = len(data)
    if kind == "truncate":
        cut = int(rng.integers(1, max(2, n - 1)))
        path.write_bytes(data[:cut])
        return f"truncated to {cut} of {n} bytes", -1, 0
    if kind == "cut_lines":  # an interrupted copy that stopped between two rows
        lines = data.splitlines(keepends=True)
        keep = int(rng.integers(max(1, len(lines) // 2), max(2, len(lines) - 1)))
        path.write_bytes(b"".join(lines[:keep]))
        return f"cut at a line boundary: {keep} of {len(lines)} lines kept", -1, 0
    if kind == "zero_head":
        path.write_bytes(b"\0" * min(1024, n) + data[1024:])
        return f"first {min(1024, n)} bytes zeroed", 0, min(1024, n)
    if kind == "empty":
        path.write_bytes(b"")
        return f"emptied ({n} bytes)", -1, 0
    if kind == "html":
        path.write_bytes(HTML_PAGE)
        return f"replaced by an HTML error page ({n} bytes)", -1, 0
    if kind == "random_mid":
        length = int(min(max(64, n // 20), 4096))
        start = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4 - length)))
        junk = rng.integers(0, 256, size=min(length, n - start), dtype=np.uint8).tobytes()
        path.write_bytes(data[:start] + junk + data[start + len(junk):])
        return f"{len(junk)} random bytes at offset {start} of {n}", start, len(junk)
    raise ValueError(f"unknown corruption kind {kind!r}")


def choose(root: Path, n_files: int, rng: np.random.Generator, plan: list[tuple[str, str]] | None = None,
           patients: set[str] | None = None, imaging: bool = False) -> list[Damage]:
    """Damage ``n_files`` distinct files picked at random (a door with files left, then a kind it takes, then a
    file), of ``patients`` only when given, imaging inputs only with ``imaging`` (see ``candidates``); or the
    given (door, kind) plan."""
    files = candidates(root, patients, imaging)
    gdc = file_patients(root)
    out: list[Damage] = []
    picks = list(plan) if plan else []
    while len(out) < (len(plan) if plan else n_files):
        used = {d.file for d in out}
        doors = sorted(d for d, fs in files.items() if set(fs) - used)
        if not doors or (plan and not picks):
            break
        if picks:
            door, kind = picks.pop(0)
        else:
            door = doors[int(rng.integers(len(doors)))]
            kinds = TEXT_KINDS if door in TEXT_DOORS else KINDS
            kind = kinds[int(rng.integers(len(kinds)))]
        left = [f for f in files.get(door, []) if f not in used]
        if not left:
            continue
        rel = left[int(rng.integers(len(left)))]
        detail, start, length = corrupt(root / rel, kind, rng)
        out.append(Damage(door, rel, kind, detail, patient_of(rel, gdc) or "", start, length))
    return out


def fusionrx(*args: str, log: Path, timeout_s: float = 1800) -> int:
    """Run the CLI in a child process; its exit code (negative: killed by that signal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cli = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]
    with open(log, "w") as fh:
        return subprocess.run(cli + list(args), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout_s, check=False).returncode


def scan_and_run(data: Path, work: Path, config: Path, reuse: bool = False) -> dict:
    """``fusionrx scan`` then ``fusionrx run`` over ``data``; exit codes, the scan result and the run record.
    With ``reuse``, a finished scan + run in ``work`` under the same config is read back, not repeated."""
    work.mkdir(parents=True, exist_ok=True)
    catalog, store = work / "catalog.yaml", work / "store"
    scan_json, done = work / "scan.json", work / "exit_codes.json"
    key = {"config": config.read_text(), "data": str(data)}
    if reuse and done.is_file() and json.loads(done.read_text())["key"] == key:
        scan_rc, run_rc = json.loads(done.read_text())["codes"]
    else:
        done.unlink(missing_ok=True)
        shutil.rmtree(store, ignore_errors=True)
        scan_rc, run_rc = _scan_then_run(data, catalog, store, config, work)
        done.write_text(json.dumps({"key": key, "codes": [scan_rc, run_rc]}))
    scan = {}
    if scan_rc in ok_exits():
        text = scan_json.read_text()
        scan = json.loads(text[text.index("{"):])
    records = sorted(p for p in (store / "runs").glob("*.json") if p.name.count(".") == 1) if store.is_dir() else []
    run = json.loads(records[-1].read_text()) if records else {}
    return {"scan_rc": scan_rc, "run_rc": run_rc, "scan": scan, "run": run, "store": store,
            "run_log": work / "run.log", "scan_log": scan_json}


def _scan_then_run(data: Path, catalog: Path, store: Path, config: Path, work: Path) -> tuple[int, int | None]:
    """Exit codes of ``fusionrx scan`` and (when the scan completed) ``fusionrx run``."""
    scan_rc = fusionrx("scan", str(data), "--out", str(catalog), "--format", "json", log=work / "scan.json")
    run_rc = fusionrx("run", "--catalog", str(catalog), "--store", str(store), "--config", str(config),
                      log=work / "run.log") if scan_rc in ok_exits() else None
    return scan_rc, run_rc


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


def _mentions(records: list[tuple[str, str]], data: Path, d: Damage) -> str:
    """The first record (where: text) whose text names the damaged file (absolute or relative path), or, for
    a DICOM slice, its series folder."""
    names = [str(data / d.file), d.file]
    if d.door == "dicom":
        names += [str(data / Path(d.file).parent) + sep for sep in (" ", ":", "/")]
    for where, text in records:
        if any(n in text for n in names):
            return f"{where}: {text[:600]}"
    return ""


def run_findings(result: dict) -> list[str]:
    """Run-level findings: an exit status outside ``ok_exits()`` (a crash: negative) or a traceback."""
    out = []
    for step in ("scan", "run"):
        rc, log = result[f"{step}_rc"], result[f"{step}_log"]
        if rc is not None and rc not in ok_exits():
            out.append(f"{step} exited {rc} (see {log})")
        if rc is not None and log.is_file() and TRACEBACK in log.read_text(errors="replace"):
            out.append(f"{step} printed a Python traceback (see {log})")
    return out


def judge(damages: list[Damage], data: Path, pristine: Path, result: dict) -> list[str]:
    """Fill each damage's verdict (named / harmless / undetectable / masked / finding); the list of
    findings, the run-level ones included."""
    findings = run_findings(result)
    recs = named_records(result)
    for d in damages:
        d.named = _mentions(recs, data, d)
        d.named_by = ("run" if d.named.startswith("run") else "scan") if d.named else ""
    for d in (d for d in damages if not d.named):
        ok_bad, got = isolated_digest(d.door, data / d.file)
        ok_ref, want = isolated_digest(d.door, pristine / d.file)
        first = next((o for o in damages if o.named_by == "run" and o.door == d.door and o.patient == d.patient
                      and o is not d), None)
        if ok_bad and ok_ref and got == want:
            d.harmless = "the reader returns the same content as from the undamaged file (damaged bytes not read)"
        elif d.door == "dicom" and d.start >= 0 and pixel_data_only(pristine / d.file, d.start, d.length):
            d.undetectable = "random bytes only inside uncompressed pixel data: valid other pixel values, no checksum"
        elif not ok_bad and first is not None:
            d.masked = (f"the reader fails on it alone ({got[:120]}); the patient's {first.file} failed first and "
                        "is named: this one is named once that is replaced")
        elif ok_bad:
            d.finding = "not named; the reader returns different content without an error (silent)"
        else:
            d.finding = f"not named; the reader alone fails: {got}"
        if d.finding:
            findings.append(f"{d.door} {d.file} [{d.kind}: {d.detail}]: {d.finding}")
    return findings


RANKING_COLUMNS = ("gene", "rank", "score", "rna_expression", "copy_number", "survival_association",
                   "spatial_tumour_region", "somatic_mutation", "model_attribution")


def ranking(store: Path) -> pd.DataFrame:
    """The target ranking of the store's latest run (results DB, read-only): ``RANKING_COLUMNS`` by rank."""
    from flows.results.db import connect

    con = connect(store, read_only=True)
    try:
        cols = ", ".join(RANKING_COLUMNS)
        return con.execute(f"SELECT {cols} FROM targets WHERE run_id = (SELECT run_id FROM runs ORDER BY "
                           "finished_utc DESC LIMIT 1) ORDER BY rank, gene").df()
    finally:
        con.close()


def ranking_changes(clean: Path, run: Path, top: int = 10) -> list[str]:
    """How the run's target ranking differs from the clean run's (empty: identical genes in the same order,
    identical scores and per-type evidence scores); at most ``top`` genes are listed per difference."""
    a, b = ranking(clean), ranking(run)
    if a.empty:
        return ["the clean run has no ranking to compare"]
    if list(a["gene"]) != list(b["gene"]):
        moved = [f"{g} {r}->{dict(zip(b['gene'], b['rank'])).get(g, 'absent')}"
                 for g, r in zip(a["gene"], a["rank"]) if dict(zip(b["gene"], b["rank"])).get(g) != r]
        return [f"ranking: {len(moved)} of {len(a)} genes moved ({', '.join(moved[:top])})"]
    out = []
    for col in RANKING_COLUMNS[2:]:
        differ = ~np.isclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=0.0, atol=0.0, equal_nan=True)
        if differ.any():
            genes = a.loc[differ, "gene"].tolist()
            out.append(f"ranking: {col} differs for {len(genes)} genes ({', '.join(genes[:top])})")
    return out


def untouched_patients(damages: list[Damage], root: Path) -> list[str]:
    """Patients of the cohort (those with a file of any door) that no damage touched."""
    gdc = file_patients(root)
    everyone = {patient_of(f, gdc) for fs in candidates(root).values() for f in fs}
    return sorted(p for p in everyone - {d.patient for d in damages} if p)


def prepare(out: Path, n_patients: int, cohort_seed: int, config_text: str | None = None) -> dict:
    """The pristine cohort under ``out/pristine`` (generated once) and its clean scan + run (the baseline)."""
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    pristine = out / "pristine"
    if not pristine.is_dir():
        generate_cohort(pristine, CohortConfig(n_patients=n_patients, seed=cohort_seed, frac_spatial=0.6,
                                               frac_spaceranger=0.5), progress=lambda m: None)
        (pristine / "data_catalog.yaml").unlink(missing_ok=True)  # runs go through the catalog scan writes
    config = out / "run_config.yaml"
    config.write_text(config_text if config_text is not None else harness_config())
    clean = scan_and_run(pristine, out / "clean", config, reuse=True)  # a rerun into the same --out reuses it
    return {"pristine": pristine, "config": config, "clean": clean, "findings": run_findings(clean)}


def fuzz_seed(out: Path, base: dict, n_files: int, seed: int, n_victims: int | None = None,
              plan: list[tuple[str, str]] | None = None, keep: bool = False, imaging: bool = False) -> dict:
    """Damage a copy of the pristine cohort (seeded; imaging inputs only with ``imaging``), scan + run it,
    judge every damage, compare the untouched patients' outputs with the clean run's and, when only imaging
    inputs were damaged (``imaging_only``), the target ranking too; the report as a dict."""
    pristine = base["pristine"]
    data, work = out / f"data-{seed}", out / f"work-{seed}"
    for d in (data, work):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(pristine, data)
    rng = np.random.default_rng(seed)
    gdc = file_patients(pristine)
    patients = sorted({p for fs in candidates(pristine).values() for f in fs for p in [patient_of(f, gdc)] if p})
    victims = set(rng.choice(patients, size=min(n_victims, len(patients)), replace=False)) if n_victims else None
    damages = choose(data, n_files, rng, plan, patients=victims, imaging=imaging)
    result = scan_and_run(data, work, base["config"])
    findings = judge(damages, data, pristine, result)
    untouched = untouched_patients(damages, pristine)
    completed = result["run_rc"] in ok_exits()
    changes, notes = untouched_changes(base["clean"]["store"], result["store"], untouched) if completed else ([], [])
    findings += [f"untouched output changed: {c}" for c in changes]
    compare = completed and imaging_only(damages, pristine)
    rank_changes = ranking_changes(base["clean"]["store"], result["store"]) if compare else []
    findings += [f"imaging-only damage changed the {c}" for c in rank_changes]
    report = {"seed": seed, "scan_rc": result["scan_rc"], "run_rc": result["run_rc"],
              "damages": [asdict(d) for d in damages], "findings": findings, "untouched": untouched,
              "untouched_changed": changes, "not_compared": notes, "skipped": result["run"].get("skipped", []),
              "ranking_compared": compare, "ranking_changed": rank_changes,
              "store": str(result["store"]), "counts": counts(damages, result, changes, compare, rank_changes)}
    if not keep and not findings:  # kept on a finding: the damaged cohort, its logs and store to look at
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return report


def counts(damages: list[Damage], result: dict, changes: list[str], ranking_compared: bool = False,
           ranking_changed: list[str] = ()) -> dict[str, int]:
    """The figures of one damaged run: tried, named (by the run summary / by the scan only), harmless,
    undetectable, findings, crashes (a negative exit status), untouched outputs changed, ranking compared
    (1 when only imaging inputs were damaged) and ranking changed (1 when it then differs)."""
    crashed = sum(1 for k in ("scan_rc", "run_rc") if result[k] is not None and result[k] < 0)
    return {"tried": len(damages), "named_run": sum(d.named_by == "run" for d in damages),
            "named_scan": sum(d.named_by == "scan" for d in damages),
            "harmless": sum(bool(d.harmless) for d in damages),
            "undetectable": sum(bool(d.undetectable) for d in damages),
            "masked": sum(bool(d.masked) for d in damages),
            "findings": sum(bool(d.finding) for d in damages), "crashes": crashed,
            "untouched_changed": len(changes), "ranking_compared": int(ranking_compared),
            "ranking_changed": int(bool(ranking_changed))}


def _print(report: dict) -> None:
    c = report["counts"]
    print(f"seed {report['seed']}: scan exit {report['scan_rc']}, run exit {report['run_rc']}; " +
          ", ".join(f"{k} {v}" for k, v in c.items()) + f"; untouched patients {len(report['untouched'])}")
    for d in report["damages"]:
        verdict = next(f"{tag:<13}{d[key]}" for key, tag in (("named", "NAMED"), ("harmless", "HARMLESS"),
                       ("undetectable", "UNDETECTABLE"), ("masked", "MASKED"), ("finding", "FINDING"), ("door", "?")) if d[key])
        print(f"  {d['door']:<12} {d['kind']:<10} {d['file']}\n      {d['detail']}\n      {verdict}")
    for f in report["findings"]:
        print(f"  ! {f}")
    for n in sorted(set(report["not_compared"])):
        print(f"  (not compared: {n})")


def totals(reports: list[dict]) -> dict[str, int]:
    """The counts summed over seeds."""
    keys = reports[0]["counts"].keys() if reports else []
    return {k: sum(r["counts"][k] for r in reports) for k in keys}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--files", type=int, default=24, help="damaged files per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one damaged run per seed")
    ap.add_argument("--victims", type=int, default=None,
                    help="damage only this many patients (the others are compared with the clean run)")
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="working folder (kept); default a temporary one, removed")
    ap.add_argument("--keep", action="store_true", help="keep each seed's damaged cohort and store")
    ap.add_argument("--imaging-only", action="store_true",
                    help="damage only imaging inputs (DICOM slices; slides of patients without a spatial sample) "
                         "and check that the target ranking is identical to the clean run's")
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    args = ap.parse_args(argv)
    from flows.console import quiet_prefect_env

    quiet_prefect_env()
    tmp = tempfile.TemporaryDirectory(prefix="fuzz_cohort_") if args.out is None else None
    out = Path(tmp.name) if tmp else args.out
    try:
        base = prepare(out, args.patients, args.cohort_seed)
        for f in base["findings"]:
            print(f"clean run: ! {f}")
        reports = []
        for seed in args.seeds:
            reports.append(fuzz_seed(out, base, args.files, seed, args.victims, keep=args.keep,
                                     imaging=args.imaging_only))
            _print(reports[-1])
    finally:
        if tmp is not None:
            tmp.cleanup()
    total = totals(reports)
    print("total over seeds " + " ".join(map(str, args.seeds)) + ": " + ", ".join(f"{k} {v}" for k, v in total.items()))
    if args.json:
        named = sum(total[k] for k in ("named_run", "named_scan", "harmless", "undetectable", "masked"))
        summary = {"what": "damaged files named, harmless or undetectable", "ours": named,
                   "baseline": total["tried"], "baseline_name": "damaged files tried",
                   "ratio": named / max(1, total["tried"]), "unit": "files"}
        args.json.write_text(json.dumps({"totals": total, "summary": summary, "seeds": reports}, indent=1,
                                        default=str))
    return 1 if base["findings"] or any(r["findings"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
