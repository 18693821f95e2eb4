"""Artifact store: atomic writes and a manifest that knows when inputs changed."""

from __future__ import annotations

import hashlib

import pytest

from flows.store.artifacts import ArtifactStore, atomic_path, path_sha256


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_path_hash_of_file_and_folder(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert path_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    h1 = path_sha256(d)
    (d / "x").write_bytes(b"2")
    assert path_sha256(d) != h1


def test_manifest_freshness_follows_inputs_and_config(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    name = "imaging/p1.json"
    store.path(name).write_text("{}")
    inputs = {"ct": "aa"}
    assert not store.is_fresh(name, inputs, {"k": 1})
    store.record(name, "ingest", inputs, {"k": 1}, run_id="r1")
    assert store.is_fresh(name, inputs, {"k": 1})
    assert not store.is_fresh(name, {"ct": "bb"}, {"k": 1})
    assert not store.is_fresh(name, inputs, {"k": 2})
    reopened = ArtifactStore(tmp_path / "store")  # the manifest persists
    assert reopened.is_fresh(name, inputs, {"k": 1})
    assert reopened.manifest().loc[0, "run_id"] == "r1"


def test_records_from_many_store_objects_and_threads_all_survive(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "store"

    def work(i: int) -> None:
        store = ArtifactStore(root)  # each task opens its own store object, as the flow's tasks do
        name = f"a/{i}.txt"
        store.path(name).write_text(str(i))
        store.record(name, "t", {"x": str(i)}, None, run_id="r")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(24)))
    store = ArtifactStore(root)
    assert len(store.manifest()) == 24
    assert all(store.is_fresh(f"a/{i}.txt", {"x": str(i)}) for i in range(24))
