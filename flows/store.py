"""The artifact store: standard artifacts under one folder plus a manifest of their input hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

MANIFEST = "manifest.parquet"
_HASH_CHUNK = 1 << 20
_MANIFEST_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _manifest_lock(root: Path) -> threading.Lock:
    """One lock per store root, shared by every ArtifactStore object of this process (tasks run in threads)."""
    with _LOCKS_GUARD:
        return _MANIFEST_LOCKS.setdefault(root, threading.Lock())


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names + contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    digest = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        digest.update(str(f.relative_to(p)).encode())
        digest.update(file_sha256(f).encode())
    return digest.hexdigest()


def config_sha256(config: Any) -> str:
    """Stable hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it onto ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class ArtifactStore:
    """Artifacts keyed by a relative name, with a manifest recording each one's input hashes.

    A rerun asks ``is_fresh(name, inputs)`` and skips work whose inputs and config are unchanged.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _manifest_lock(self.root)
        with self._lock:
            self._manifest = self._load_manifest()

    def path(self, name: str) -> Path:
        """Absolute path of an artifact (parent folders created)."""
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_parquet(self, name: str, df: pd.DataFrame) -> Path:
        """Write a table artifact atomically (temp file, then rename)."""
        with atomic_path(self.path(name)) as tmp:
            df.to_parquet(tmp)
        return self.root / name

    def write_h5ad(self, name: str, adata: Any) -> Path:
        """Write an AnnData artifact atomically (temp file, then rename)."""
        with atomic_path(self.path(name)) as tmp:
            adata.write_h5ad(tmp)
        return self.root / name

    def _load_manifest(self) -> dict[str, dict[str, Any]]:
        f = self.root / MANIFEST
        if not f.exists():
            return {}
        df = pd.read_parquet(f)
        return {r["artifact"]: dict(r) for r in df.to_dict("records")}

    def _save_manifest(self) -> None:
        rows = list(self._manifest.values())
        df = pd.DataFrame(rows, columns=["artifact", "stage", "inputs_sha256", "config_sha256",
                                         "artifact_sha256", "run_id", "created_utc"])
        with atomic_path(self.root / MANIFEST) as tmp:
            df.to_parquet(tmp, index=False)

    def is_fresh(self, name: str, inputs_sha256: dict[str, str], config: Any = None) -> bool:
        """True when the artifact exists and was made from exactly these inputs and config."""
        with self._lock:
            self._manifest = self._load_manifest()
            rec = self._manifest.get(name)
        if rec is None or not (self.root / name).exists():
            return False
        return (rec["inputs_sha256"] == json.dumps(inputs_sha256, sort_keys=True)
                and rec["config_sha256"] == config_sha256(config))

    def record(self, name: str, stage: str, inputs_sha256: dict[str, str], config: Any, run_id: str) -> None:
        """Add/replace the manifest row of an artifact that has just been written."""
        p = self.root / name
        art_hash = path_sha256(p) if p.exists() else ""
        with self._lock:
            self._manifest = self._load_manifest()  # merge with rows other tasks recorded meanwhile
            self._manifest[name] = {
                "artifact": name, "stage": stage,
                "inputs_sha256": json.dumps(inputs_sha256, sort_keys=True),
                "config_sha256": config_sha256(config), "artifact_sha256": art_hash,
                "run_id": run_id, "created_utc": datetime.now(timezone.utc).isoformat(),
            }
            self._save_manifest()

    def manifest(self) -> pd.DataFrame:
        """The manifest as a table (one row per artifact)."""
        with self._lock:
            return pd.DataFrame(list(self._manifest.values()))
