"""Target encoders for activity models: a learned target embedding, k-mer composition and a sequence CNN.

``TargetEncoder`` sums the parts named in ``parts`` (each projected to ``dim``):
  - "embedding": one learned vector per known target (row 0 = unknown target, used for unseen ones);
  - "kmer": amino-acid 1-mer + 2-mer composition (420 frequencies) through an MLP;
  - "cnn": DeepDTA/GraphDTA-style 1-D CNN over amino-acid tokens with global max pooling.
The embedding memorises seen targets; kmer / cnn carry sequence information to unseen ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fusion.errors import MoleculeError

__all__ = ["AMINO_ACIDS", "KMER_DIM", "encode_sequences", "kmer_composition", "ProteinCNN", "TargetEncoder",
           "TARGET_PARTS"]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
_TOKEN = np.zeros(256, dtype=np.int64) + len(AMINO_ACIDS) + 1  # any other letter -> "X" token (21)
for _i, _a in enumerate(AMINO_ACIDS):
    _TOKEN[ord(_a)] = _i + 1
N_TOKENS = len(AMINO_ACIDS) + 2  # 0 = padding, 1..20 amino acids, 21 = other
KMER_DIM = len(AMINO_ACIDS) + len(AMINO_ACIDS) ** 2
TARGET_PARTS = ("embedding", "kmer", "cnn")


def _codes(sequence: str) -> np.ndarray:
    raw = np.frombuffer(sequence.upper().encode("ascii", "replace"), dtype=np.uint8)
    return _TOKEN[raw]


def encode_sequences(sequences: Sequence[str], max_len: int = 1000) -> torch.Tensor:
    """Token ids (n, max_len) int64: amino acids 1..20, other letters 21, padding 0 (sequences truncated)."""
    out = np.zeros((len(sequences), max_len), dtype=np.int64)
    for i, s in enumerate(sequences):
        codes = _codes(s)[:max_len]
        out[i, : len(codes)] = codes
    return torch.from_numpy(out)


def kmer_composition(sequences: Sequence[str]) -> torch.Tensor:
    """1-mer and 2-mer frequencies (n, 420) float32 of the 20 standard amino acids (others ignored)."""
    n_aa = len(AMINO_ACIDS)
    out = np.zeros((len(sequences), KMER_DIM), dtype=np.float32)
    for i, s in enumerate(sequences):
        codes = _codes(s) - 1
        ok = codes < n_aa
        if ok.any():
            out[i, :n_aa] = np.bincount(codes[ok], minlength=n_aa) / ok.sum()
        pair_ok = ok[:-1] & ok[1:]
        if pair_ok.any():
            pairs = codes[:-1][pair_ok] * n_aa + codes[1:][pair_ok]
            out[i, n_aa:] = np.bincount(pairs, minlength=n_aa * n_aa) / pair_ok.sum()
    return torch.from_numpy(out)


class ProteinCNN(nn.Module):
    """Token embedding -> three Conv1d + ReLU (filters f, 2f, 3f) -> global max pool -> Linear(dim)."""

    def __init__(self, dim: int = 128, embed_dim: int = 64, filters: int = 32, kernel: int = 8):
        super().__init__()
        self.embed = nn.Embedding(N_TOKENS, embed_dim, padding_idx=0)
        self.convs = nn.Sequential(
            nn.Conv1d(embed_dim, filters, kernel), nn.ReLU(),
            nn.Conv1d(filters, 2 * filters, kernel), nn.ReLU(),
            nn.Conv1d(2 * filters, 3 * filters, kernel), nn.ReLU(),
        )
        self.out = nn.Linear(3 * filters, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, length) token ids -> (n, dim)."""
        h = self.convs(self.embed(tokens).transpose(1, 2))
        return self.out(h.amax(dim=2))


class TargetEncoder(nn.Module):
    """Sum of the chosen parts (see module docstring) -> (n_targets, dim)."""

    def __init__(self, n_targets: int, parts: Sequence[str] = ("embedding", "kmer"), dim: int = 128,
                 cnn_filters: int = 32):
        super().__init__()
        unknown = [p for p in parts if p not in TARGET_PARTS]
        if unknown or not parts:
            raise MoleculeError(f"target encoder parts: expected a non-empty subset of {TARGET_PARTS}, found {list(parts)}")
        self.parts = tuple(parts)
        if "embedding" in self.parts:
            self.embedding = nn.Embedding(n_targets + 1, dim)  # row 0: unknown target
            nn.init.normal_(self.embedding.weight, std=0.1)
        if "kmer" in self.parts:
            self.kmer = nn.Sequential(nn.Linear(KMER_DIM, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        if "cnn" in self.parts:
            self.cnn = ProteinCNN(dim, filters=cnn_filters)

    def id_embedding(self, target_id: torch.Tensor) -> torch.Tensor | None:
        """Learned vectors (n, dim) of 1-based vocabulary ids (0 = unknown); None without an embedding part."""
        return self.embedding(target_id) if "embedding" in self.parts else None

    def sequence_embedding(self, kmer: torch.Tensor | None = None,
                           tokens: torch.Tensor | None = None) -> torch.Tensor | None:
        """Sequence part (n, dim) from kmer (n, 420) and/or tokens (n, length); None without one."""
        out = None
        if "kmer" in self.parts:
            out = self.kmer(kmer * 20.0)  # frequencies ~1/20 and ~1/400: rescale towards unit range
        if "cnn" in self.parts:
            out = self.cnn(tokens) if out is None else out + self.cnn(tokens)
        return out

    def forward(self, target_id: torch.Tensor, kmer: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        """target_id (n,) 1-based vocabulary index (0 = unknown); kmer (n, 420); tokens (n, length) -> (n, dim)."""
        parts = [x for x in (self.id_embedding(target_id), self.sequence_embedding(kmer, tokens)) if x is not None]
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]
