"""The artifact store: atomic writes, the manifest of input hashes, the run lock."""
