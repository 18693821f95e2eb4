"""Look for identifying strings in every file under a folder, inside compressed and binary containers too.

A plain grep misses a name stored in a compressed ``.npz`` member (and numpy keeps text as UTF-32), in a
snappy/zstd parquet page, a gzip-filtered HDF5 dataset or attribute, a DuckDB or SQLite table. Each file is
searched as raw bytes and, by its content (magic bytes, not its name), opened as a zip/npz, gzip, zlib, zstd,
HDF5, SQLite, DuckDB or parquet file whose members, datasets, attributes, tables and columns are searched in
turn (recursively: a gzip inside a zip is opened too). Every needle is also looked for in UTF-16 and UTF-32.
"""

from __future__ import annotations

import gzip
import io
import re
import sqlite3
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MAX_DEPTH = 4


_RUNS = [re.compile(rb"[\x20-\x7e]{4,}"), re.compile(rb"(?:[\x20-\x7e]\x00){4,}"),
         re.compile(rb"(?:[\x20-\x7e]\x00\x00\x00){4,}")]  # printable runs in UTF-8, UTF-16-LE, UTF-32-LE


def _text_runs(raw: bytes) -> str:
    """Every printable ASCII run of >= 4 characters, in any of the three encodings, lower-cased, one per line
    (what `strings` shows: a needle is looked for in these, not in the megabytes of binary around them)."""
    runs = [m.group().decode("ascii") for m in _RUNS[0].finditer(raw)]
    runs += [m.group().decode("utf-16-le") for m in _RUNS[1].finditer(raw)]
    runs += [m.group().decode("utf-32-le") for m in _RUNS[2].finditer(raw)]
    return "\n".join(runs).lower()


def _patterns(needles: list[str]) -> list[tuple[str, str, re.Pattern[str] | None]]:
    """(needle, lower-cased, pattern): digit-only needles (dates) get a pattern that keeps them off other
    digits, so a float's digits do not match a date by chance."""
    return [(n, n.lower(), re.compile(rf"(?<![0-9]){re.escape(n)}(?![0-9])") if n.isdigit() else None)
            for n in needles]


def _npy_text(raw: bytes) -> bytes:
    """The text of a .npy member holding strings (numpy stores them as UTF-32), else nothing."""
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception:  # noqa: BLE001 - object arrays, not an array
        return b""
    if arr.dtype.kind in "US":
        return "\n".join(str(v) for v in np.ravel(arr)).encode("utf-8", "replace")
    return b""


def _h5_blobs(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Names, attributes and string / byte datasets of an HDF5 file (filters decoded by h5py)."""
    import h5py

    parts: list[tuple[str, bytes]] = []

    def visit(name: str, obj) -> None:
        parts.append((f"{name} (name+attrs)", repr([name] + [(k, obj.attrs[k]) for k in obj.attrs]).encode()))
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OSUVui" and obj.size:
            data = obj[()]
            if obj.dtype.kind in "ui" and obj.dtype.itemsize > 1:
                return
            parts.append((name, repr(data.tolist() if hasattr(data, "tolist") else data).encode()
                          if obj.dtype.kind in "OSU" else np.asarray(data).tobytes()))

    with h5py.File(io.BytesIO(raw), "r") as f:
        parts.append(("/ attrs", repr([(k, f.attrs[k]) for k in f.attrs]).encode()))
        f.visititems(visit)
    yield from parts


def _sqlite_blobs(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every table's rows of a SQLite file (read-only)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for t in tables:
            rows = con.execute(f'select * from "{t}"').fetchall()
            yield t, repr(rows).encode("utf-8", "replace")
    finally:
        con.close()


def _duckdb_blobs(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every table's rows of a DuckDB file (read-only)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        for schema, table in con.execute("select table_schema, table_name from information_schema.tables").fetchall():
            rows = con.execute(f'select * from "{schema}"."{table}"').fetchall()
            yield f"{schema}.{table}", repr(rows).encode("utf-8", "replace")
    finally:
        con.close()


def _parquet_blobs(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """The schema (with its key-value metadata) and every column of a parquet file, as text."""
    import pyarrow.parquet as pq

    import pyarrow as pa

    table = pq.read_table(io.BytesIO(raw))
    yield "schema", repr(table.schema.metadata).encode() + str(table.schema).encode()
    for name in table.column_names:  # numbers hold no text: only string, binary and nested columns are read
        col = table.column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
            yield name, repr(col.to_pylist()).encode("utf-8", "replace")


def _members(raw: bytes, path: Path | None) -> Iterator[tuple[str, bytes]]:
    """The decoded contents of a container, by its magic bytes (nothing for a plain file)."""
    if raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            for name in z.namelist():
                data = z.read(name)
                yield name, data
                if name.endswith(".npy"):
                    yield f"{name} (text)", _npy_text(data)
    elif raw[:2] == b"\x1f\x8b":
        yield "gunzip", gzip.decompress(raw)
    elif raw[:1] == b"\x78" and raw[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        try:
            yield "zlib", zlib.decompress(raw)
        except zlib.error:
            pass
    elif raw[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard  # a zstd file where zstandard is missing fails the search: unsearched is not clean

        yield "unzstd", zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif raw[:8] == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            yield "png text chunks", repr(im.info).encode("utf-8", "replace")
    elif raw[:8] == b"\x89HDF\r\n\x1a\n":
        yield from _h5_blobs(raw)
    elif raw[:4] == b"PAR1" and raw[-4:] == b"PAR1":
        yield from _parquet_blobs(raw)
    elif raw[:16] == b"SQLite format 3\x00" and path is not None:
        yield from _sqlite_blobs(path)
    elif raw[8:12] == b"DUCK" and path is not None:
        yield from _duckdb_blobs(path)
    elif raw[:6] == b"\x93NUMPY":
        yield "npy text", _npy_text(raw)


def _search(raw: bytes, where: str, path: Path | None, pats: list, hits: list, depth: int) -> None:
    text = _text_runs(raw)
    hits.extend((where, needle) for needle, low, bounded in pats
                if low in text and (bounded is None or bounded.search(text)))
    if depth >= MAX_DEPTH:
        return
    try:
        for name, data in _members(raw, path):
            if data:
                _search(data, f"{where}::{name}", None, pats, hits, depth + 1)
    except Exception as exc:  # noqa: BLE001 - a container that cannot be opened was not searched: say so
        hits.append((where, f"<not searchable: {type(exc).__name__}: {exc}>"))


def find_strings(root: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file[::member], needle) for every needle found in a file under ``root`` (or ``root`` itself), and
    (file, '<not searchable: error>') for a container that could not be opened."""
    pats = _patterns(needles)
    hits: list[tuple[str, str]] = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        _search(path.read_bytes(), str(path), path, pats, hits, 0)
    return hits
