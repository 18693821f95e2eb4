"""Input hashing: content SHA-256 of files and folders, with a size+mtime cache persisted in the store.

A run hashes each input once (``InputHasher`` memoises per path); a file whose size and mtime match
the cache from an earlier run is not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from flows.store.atomic import atomic_path

_HASH_CHUNK = 1 << 20
HASH_CACHE = "input_hashes.parquet"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[tuple[str, ...], str, os.stat_result, bool]]:
    """A folder's files sorted by their relative path parts: (relative parts, path, stat, is a link).
    One ``scandir`` per folder and one ``stat`` per file, no per-file path objects: a DICOM tree holds
    thousands of files and a rerun stats every one. A link to a folder is not descended into."""
    out, todo = [], [((), str(root))]
    while todo:
        rel, folder = todo.pop()
        with os.scandir(folder) as it:
            for e in it:
                parts = (*rel, e.name)
                if e.is_dir():
                    if not e.is_symlink():
                        todo.append((parts, e.path))
                elif e.is_file():
                    out.append((parts, e.path, e.stat(), e.is_symlink()))
    out.sort(key=lambda t: t[0])
    return out


def folder_sha256(root: Path, file_hash: Callable[[tuple[str, ...], str, os.stat_result, bool], str]) -> str:
    """SHA-256 of a folder: each file's relative name ('/'-joined) and ``file_hash(parts, path, stat, is_link)``
    in ``_walk``'s order."""
    digest = hashlib.sha256()
    for parts, path, st, link in _walk(root):
        digest.update("/".join(parts).encode())
        digest.update(file_hash(parts, path, st, link).encode())
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names + contents, sorted)."""
    p = Path(path)
    return file_sha256(p) if p.is_file() else folder_sha256(p, lambda parts, f, st, link: file_sha256(f))


def config_sha256(config: Any) -> str:
    """Stable hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


class InputHasher:
    """Hashes inputs once per run; reads a file's bytes only when its size or mtime changed since the
    cache (``input_hashes.parquet`` in the store) last saw it. Thread-safe."""

    def __init__(self, store_root: str | Path):
        self.cache_file = Path(store_root) / HASH_CACHE
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, int, str]] = {}
        if self.cache_file.exists():
            df = pd.read_parquet(self.cache_file)
            self._cache = {r.path: (int(r.size), int(r.mtime_ns), r.sha256) for r in df.itertuples()}
        self._memo: dict[str, str] = {}
        self.files_read = 0  # files whose bytes were hashed this run (cache misses)

    def _file(self, f: Path) -> str:
        return self._cached(str(f.resolve()), f.stat(), str(f))

    def _cached(self, key: str, st: os.stat_result, path: str) -> str:
        """The file's SHA-256 from the cache when its size and mtime match ``st`` (``key``: its resolved
        path), else read and cached."""
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        sha = file_sha256(path)
        with self._lock:
            self._cache[key] = (st.st_size, st.st_mtime_ns, sha)
            self.files_read += 1
        return sha

    def _folder(self, root: Path) -> str:
        """``folder_sha256`` through the cache, keyed by the resolved root joined with each relative name (a file
        that is a link is resolved on its own)."""
        base = str(root.resolve())
        return folder_sha256(root, lambda parts, path, st, link: self._cached(
            str(Path(path).resolve()) if link else os.path.join(base, *parts), st, path))

    def __call__(self, path: str | Path) -> str:
        """SHA-256 of a file or folder (same value as ``path_sha256``), memoised for the run."""
        p = Path(path)
        key = str(p.resolve())
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        sha = self._file(p) if p.is_file() else self._folder(p)
        with self._lock:
            self._memo[key] = sha
        return sha

    def save(self) -> None:
        """Persist the size+mtime cache atomically (temp file, then rename)."""
        with self._lock:
            rows = [(k, s, m, h) for k, (s, m, h) in self._cache.items()]

        with atomic_path(self.cache_file) as tmp:
            pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "sha256"]).to_parquet(tmp, index=False)
