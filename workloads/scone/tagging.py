"""Longest-suffix tagging (L3_SPEC §6; Yu et al. Alg. 1): which f-gram, if any, ends at each position.
Details: docs/workloads.md#workloadssconetagging."""

import os

import numpy as np

from workloads.npz_files import atomic_write
from workloads.scone import fgram_kernels
from workloads.scone.discovery import Fgrams

TAG_DTYPE = np.int32
DEFAULT_CHUNK_TOKENS = 1 << 22


def longest_suffix_reference(tokens, fgrams: list[tuple[int, ...]]) -> np.ndarray:
    """Pure Python spec: out[i] = index in `fgrams` of the longest one equal to tokens[j:i+1], j < i."""
    index = {tuple(g): r for r, g in enumerate(fgrams)}
    longest = max((len(g) for g in fgrams), default=0)
    tokens = [int(t) for t in tokens]
    out = np.full(len(tokens), -1, dtype=np.int64)
    for i in range(len(tokens)):
        for n in range(min(longest, i + 1), 1, -1):
            r = index.get(tuple(tokens[i - n + 1 : i + 1]))
            if r is not None:
                out[i] = r
                break
    return out


class SuffixMatcher:
    """The reversed trie of a set of f-grams; `tag` is safe to call from any thread (read-only state)."""

    def __init__(self, fgrams: Fgrams):
        self.fgrams = fgrams
        self.max_n, self.vocab_size = fgrams.max_n, fgrams.vocab_size
        self.table, self.terminal = fgram_kernels.build_suffix_trie(
            np.ascontiguousarray(fgrams.tokens, dtype=np.int64),
            fgrams.lengths.astype(np.int64),
            fgrams.vocab_size,
        )

    def tag(self, tokens: np.ndarray, start: int = 0) -> np.ndarray:
        """(N - start,) f-gram rows (-1: none) of positions start..N-1, matching back into tokens[:start]."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        out = np.full(tokens.shape[0], -1, dtype=np.int64)
        fgram_kernels.longest_suffix(
            tokens, 0, start, tokens.shape[0], self.max_n, self.vocab_size, self.table, self.terminal, out
        )
        return out[start:]

    def tag_rows(self, tokens: np.ndarray, start: int) -> np.ndarray:
        """(B, L) token rows -> (B, L - start) tags of columns start.., matching back into columns < start
        (keep K-1 columns of history before `start`)."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        out = np.empty((tokens.shape[0], tokens.shape[1] - start), dtype=np.int64)
        fgram_kernels.longest_suffix_rows(
            tokens, start, self.max_n, self.vocab_size, self.table, self.terminal, out
        )
        return out

    def tag_last(self, history: np.ndarray) -> np.ndarray:
        """(B,) f-gram row of the longest suffix ending at the last column of (B, L) history (-1: none)."""
        history = np.asarray(history)[:, -self.max_n :]
        return self.tag_rows(history, history.shape[1] - 1)[:, 0]


def tag_split(
    matcher: SuffixMatcher,
    tokens: np.ndarray,
    path: str | os.PathLike,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> np.ndarray:
    """Tag a whole (memmapped) token stream into an int32 file at `path`; returns it memmapped read-only.

    Chunks overlap by K-1 tokens, so each position sees the same context as a whole-stream pass.
    """
    n, overlap = int(tokens.shape[0]), matcher.max_n - 1
    with atomic_write(path) as f:
        for lo in range(0, n, chunk_tokens):
            ctx = max(0, lo - overlap)
            part = np.asarray(tokens[ctx : min(n, lo + chunk_tokens)])
            matcher.tag(part, start=lo - ctx).astype(TAG_DTYPE).tofile(f)
    return open_tags(path, n)


def open_tags(path: str | os.PathLike, n_tokens: int) -> np.ndarray:
    """The tags file of a `tag_split` run as a read-only int32 memmap of n_tokens entries."""
    if n_tokens == 0:
        return np.zeros(0, dtype=TAG_DTYPE)
    tags = np.memmap(path, dtype=TAG_DTYPE, mode="r")
    if tags.shape[0] != n_tokens:
        raise ValueError(f"{path}: holds {tags.shape[0]} tags for a stream of {n_tokens} tokens")
    return tags
