"""The artifact store: standard artifacts under one folder plus a manifest of what each was made from.

Every artifact is keyed by its inputs' hashes, its config subset and the code version; a rerun whose
key is unchanged reuses it (``reuse_or_build``). Artifacts are written to a temp path beside their
final name and renamed into place; the manifest row is written only after that rename, so a run
killed at any point leaves either a complete, recorded artifact or one that the next run rebuilds.
"""

from __future__ import annotations

import fcntl
import json
import pickle
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from flows.store.atomic import atomic_dir, atomic_path  # noqa: F401 (re-exported: every writer uses them)
from flows.store.input_hashes import config_sha256, file_sha256, path_sha256  # noqa: F401 (re-exported)

MANIFEST = "manifest.parquet"
_MANIFEST_CACHE: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, Any]]]] = {}  # path -> (stat, rows)
MANIFEST_COLUMNS = ["artifact", "stage", "inputs_sha256", "config_sha256", "artifact_bytes", "run_id",
                    "created_utc"]
NEW, CHANGED, REUSED, FAILED = "new", "changed", "reused", "failed"
_MANIFEST_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _manifest_lock(root: Path) -> threading.Lock:
    """One lock per store root, shared by every ArtifactStore object of this process (tasks run in threads)."""
    with _LOCKS_GUARD:
        return _MANIFEST_LOCKS.setdefault(root, threading.Lock())


@contextmanager
def _process_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the store's manifest across processes and hosts (Dask workers), via flock."""
    with open(root / ".manifest.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def save_pickle(obj: Any, path: Path) -> None:
    """Pickle ``obj`` to ``path`` (intermediate bundles that only this pipeline reads back)."""
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_pickle(path: Path) -> Any:
    """Read back a bundle written by ``save_pickle``."""
    with open(path, "rb") as fh:
        return pickle.load(fh)


class ArtifactStore:
    """Artifacts keyed by a relative name, with a manifest recording each one's inputs, config and code.

    ``reuse_or_build`` is the one entry point stages use: it returns the stored artifact while its key
    is unchanged, and otherwise builds it into a temp path, renames it into place and records it.
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

    # ------------------------------------------------------------------ atomic writes
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

    def write_text(self, name: str, text: str) -> Path:
        """Write a text artifact (JSON, HTML) atomically."""
        with atomic_path(self.path(name)) as tmp:
            tmp.write_text(text)
        return self.root / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON artifact atomically (numpy scalars as floats)."""
        return self.write_text(name, json.dumps(obj, indent=1, default=float))

    # ------------------------------------------------------------------ manifest
    def _load_manifest(self) -> dict[str, dict[str, Any]]:
        """The manifest rows by artifact; parsed again only when the file changed (it is renamed into place on
        every write, so inode, size and mtime say so): a rerun asks for it hundreds of times."""
        f = self.root / MANIFEST
        try:
            st = f.stat()
        except FileNotFoundError:
            return {}
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = _MANIFEST_CACHE.get(str(f))
        if hit is None or hit[0] != sig:
            df = pd.read_parquet(f)
            hit = (sig, {r["artifact"]: dict(r) for r in df.to_dict("records")})
            _MANIFEST_CACHE[str(f)] = hit
        return dict(hit[1])

    def _save_manifest(self) -> None:
        df = pd.DataFrame(list(self._manifest.values()), columns=MANIFEST_COLUMNS)
        with atomic_path(self.root / MANIFEST) as tmp:
            df.to_parquet(tmp, index=False)

    def _current(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            self._manifest = self._load_manifest()
            return self._manifest.get(name)

    def is_fresh(self, name: str, inputs_sha256: dict[str, str], config: Any = None) -> bool:
        """True when the artifact exists and was made from exactly these inputs and config."""
        rec = self._current(name)
        if rec is None or not (self.root / name).exists():
            return False
        return (rec["inputs_sha256"] == json.dumps(inputs_sha256, sort_keys=True)
                and rec["config_sha256"] == config_sha256(config))

    def key(self, name: str) -> str:
        """The recorded key (hash of inputs and config) of an artifact; '' when it is not recorded."""
        rec = self._current(name)
        return "" if rec is None else config_sha256([rec["inputs_sha256"], rec["config_sha256"]])

    def record(self, name: str, stage: str, inputs_sha256: dict[str, str], config: Any, run_id: str) -> None:
        """Add/replace the manifest row of an artifact that is already in place."""
        size = _size(self.root / name)
        with self._lock, _process_lock(self.root):  # threads of this process, then other processes
            self._manifest = self._load_manifest()  # merge with rows other tasks recorded meanwhile
            self._manifest[name] = {
                "artifact": name, "stage": stage,
                "inputs_sha256": json.dumps(inputs_sha256, sort_keys=True),
                "config_sha256": config_sha256(config), "artifact_bytes": size,
                "run_id": run_id, "created_utc": datetime.now(timezone.utc).isoformat(),
            }
            self._save_manifest()

    def manifest(self) -> pd.DataFrame:
        """The manifest as a table (one row per artifact)."""
        with self._lock:
            return pd.DataFrame(list(self._load_manifest().values()))

    # ------------------------------------------------------------------ reuse
    def reuse_or_build(self, name: str, stage: str, inputs: dict[str, str], config: Any, run_id: str,
                       build: Callable[[Path], Any], load: Callable[[Path], Any],
                       folder: bool = False) -> tuple[Any, str]:
        """The artifact ``name``: ``load(final)`` when its key is unchanged, else ``build(tmp)`` which
        writes it at a temp path (a file, or an empty folder with ``folder=True``) that is renamed into
        place and recorded. Returns (value, status) with status 'reused', 'new' or 'changed'."""
        if self.is_fresh(name, inputs, config):
            return load(self.root / name), REUSED
        status = CHANGED if self._current(name) is not None else NEW
        final = self.path(name)
        writer = atomic_dir(final) if folder else atomic_path(final)
        with writer as tmp:
            value = build(tmp)
        self.record(name, stage, inputs, config, run_id)
        return value, status
