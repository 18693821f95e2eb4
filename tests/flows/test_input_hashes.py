"""Input hashing (flows.store.input_hashes): a folder's hash is its files' relative names and SHA-256s in path
order, the same whether computed from scratch or through the run's size+mtime cache, and the cache re-reads
exactly the files whose size or mtime changed."""

from __future__ import annotations

import hashlib
import os

from flows.store.input_hashes import InputHasher, path_sha256


def by_hand(root, names: list[str]) -> str:
    """The documented definition: sha256 over (relative name, file sha256) in the given order."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update(hashlib.sha256((root / name).read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a-c").write_bytes(b"dash")  # '-' sorts before '/' as a string, after 'a' as a path part
    (root / "a" / "b" / "x.dcm").write_bytes(b"\x00" * 300)
    (root / "a" / "z").write_bytes(b"z")
    (root / "b.txt").write_bytes(b"bee")
    os.symlink(root / "b.txt", root / "link.txt")  # a link to a file is hashed as that file
    # path-part order: a/b/x.dcm, a/z, a-c, b.txt, link.txt
    return ["a/b/x.dcm", "a/z", "a-c", "b.txt", "link.txt"]


def test_folder_hash_matches_the_definition_and_the_cache(tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    store.mkdir()
    names = make_tree(data)
    expected = by_hand(data, names)
    assert path_sha256(data) == expected
    first = InputHasher(store)
    assert first(data) == expected and first.files_read == 4  # the link is b.txt, read once
    first.save()
    again = InputHasher(store)
    assert again(data) == expected and again.files_read == 0  # every file from the size+mtime cache
    (data / "a" / "z").write_bytes(b"zz")  # one file changed: only it is read
    changed = InputHasher(store)
    assert changed(data) == by_hand(data, names) != expected and changed.files_read == 1
