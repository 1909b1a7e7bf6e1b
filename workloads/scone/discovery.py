"""SCONE f-gram discovery (L3_SPEC §6; Yu et al. 2025 §3.1, Alg. 2): `discover_fgrams` → `Fgrams`.
Details: docs/workloads.md#workloadssconediscovery."""

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.l3 import lzw_trie
from workloads.npz_files import load_npz, save_npz
from workloads.scone import fgram_kernels

DEFAULT_CHUNK_TOKENS = 1 << 22
MAX_NODES = (1 << 31) - 1  # node ids per position are stored as int32 between scans
_FORMAT = "isosparse.scone.fgrams/v1"


def check_discovery_args(vocab_size: int, n_fgrams: int, max_n: int, min_count: int) -> None:
    """Field checks shared by the config and discovery: each error names the scone.* field."""
    fields = {
        "vocab_size": (vocab_size, 1),
        "n_fgrams": (n_fgrams, 1),
        "max_n": (max_n, 2),
        "min_count": (min_count, 1),
    }
    for name, (value, low) in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"scone.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class Fgrams:
    """The kept f-grams in rank order, plus how they were found.

    tokens: (S, max_n) int64, row r holds lengths[r] tokens then -1 padding. counts: (S,) int64.
    n_candidates: survivors of all scans (the top n_fgrams of them were kept).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    vocab_size: int
    max_n: int
    min_count: int
    corpus_fingerprint: str
    n_tokens: int
    n_candidates: int

    def __post_init__(self) -> None:
        S = self.tokens.shape[0]
        if self.tokens.shape != (S, self.max_n) or self.lengths.shape != (S,) or self.counts.shape != (S,):
            raise ValueError(
                f"Fgrams arrays disagree: tokens {self.tokens.shape}, lengths {self.lengths.shape}, "
                f"counts {self.counts.shape}, max_n {self.max_n}"
            )
        if S and (self.lengths.min() < 2 or self.lengths.max() > self.max_n):
            raise ValueError(f"f-gram lengths must lie in [2, max_n={self.max_n}]")

    @property
    def n_fgrams(self) -> int:
        return int(self.tokens.shape[0])

    def as_tuples(self) -> list[tuple[int, ...]]:
        return [tuple(int(t) for t in row[:n]) for row, n in zip(self.tokens, self.lengths, strict=True)]


class _Trie:
    """Discovery state: every candidate n-gram so far (see fgram_kernels), with count and first position."""

    def __init__(self, vocab_size: int):
        V, cap = vocab_size, 2 * vocab_size + 1024
        self.V, self.n_nodes = V, V
        self.count, self.first = np.zeros(cap, np.int64), np.full(cap, -1, np.int64)
        self.parent, self.last = np.full(cap, -1, np.int64), np.zeros(cap, np.int64)
        self.alive = np.zeros(cap, np.uint8)  # 1 byte per node: the scans read it at random
        self.last[:V], self.alive[:V] = np.arange(V), 1
        self.level = np.ones(V, np.int64)  # per node, filled after each scan
        self.table = lzw_trie.new_table(lzw_trie.MIN_SLOTS)

    def scan(self, tokens, prev, cur, starts, ends, base_pos: int, n: int) -> None:
        state = (self.table, self.n_nodes, self.count, self.first, self.parent, self.last, self.alive)
        state = fgram_kernels.count_pass(tokens, prev, cur, starts, ends, base_pos, n, self.V, *state)
        self.table, self.n_nodes, self.count, self.first, self.parent, self.last, self.alive = state
        if self.n_nodes >= MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} candidate n-grams: raise scone.min_count")

    def close_scan(self, n: int, min_count: int) -> int:
        """Mark this scan's n-grams alive (n = 2: all; else count >= min_count); returns how many.
        The next scan starts a fresh table: it only looks up (n+1)-grams."""
        new = slice(self.level.shape[0], self.n_nodes)
        self.level = np.concatenate([self.level, np.full(self.n_nodes - self.level.shape[0], n)])
        keep = np.ones(new.stop - new.start, bool) if n == 2 else self.count[new] >= min_count
        self.alive[new] = keep
        self.table = lzw_trie.new_table(lzw_trie.MIN_SLOTS)
        return int(keep.sum())

    def token_rows(self, nodes: np.ndarray, max_n: int) -> np.ndarray:
        out = np.full((nodes.shape[0], max_n), -1, dtype=np.int64)
        for r, node in enumerate(nodes.tolist()):
            path = []
            while node >= 0:
                path.append(int(self.last[node]))
                node = int(self.parent[node])
            out[r, : len(path)] = path[::-1]
        return out


def _chunks(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, chunk_tokens: int) -> Iterator[tuple]:
    """(int64 tokens of whole documents, local starts, local ends, stream position) of about chunk_tokens."""
    d, D = 0, starts.shape[0]
    while d < D:
        e = int(np.searchsorted(starts, starts[d] + chunk_tokens, side="left"))
        e = max(e, d + 1)
        lo, hi = int(starts[d]), int(ends[e - 1])
        chunk = np.asarray(tokens[lo:hi]).astype(np.int64)
        yield chunk, starts[d:e] - lo, ends[d:e] - lo, lo
        d = e


def discover_fgrams_flat(
    tokens: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    vocab_size: int,
    n_fgrams: int,
    *,
    max_n: int = 5,
    min_count: int = 5,
    corpus_fingerprint: str | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    work_dir: str | os.PathLike | None = None,
) -> Fgrams:
    """Discovery over documents tokens[starts[d]:ends[d]] (starts increasing; tokens may be a memmap).

    corpus_fingerprint: names the stream (e.g. PreparedData.fingerprint); None hashes the documents.
    work_dir: where the two per-position node files (4 bytes per token each) go; None: the temp dir.
    Raises ValueError naming the field for a bad argument, and for n_fgrams above the survivors.
    """
    check_discovery_args(vocab_size, n_fgrams, max_n, min_count)
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    if starts.shape != ends.shape or np.any(ends < starts) or np.any(np.diff(starts) < 0):
        raise ValueError("document starts must be non-decreasing with ends >= starts, one end per start")
    trie, digest, length_digest = _Trie(int(vocab_size)), hashlib.sha256(), hashlib.sha256()
    n_stream = int(ends.max()) if ends.size else 0
    with tempfile.TemporaryDirectory(prefix="fgrams-", dir=work_dir) as tmp:
        # Node of the n-gram starting at each stream position, written by scan n and read by scan n+1:
        # on disk (int32, 4 bytes per token), so memory stays the trie plus one chunk.
        ids = [_ids_file(Path(tmp) / f"ids{k}.bin", n_stream) for k in (0, 1)]
        for n in range(2, max_n + 1):
            prev, cur = ids[n % 2], ids[(n + 1) % 2]
            for chunk, s, e, base in _chunks(tokens, starts, ends, chunk_tokens):
                if n == 2:
                    _check_chunk(chunk, vocab_size)
                    if corpus_fingerprint is None:  # documents only (not separators): chunking-independent
                        digest.update(chunk[_inside(s, e, chunk.size)].astype("<i8").tobytes())
                        length_digest.update((e - s).astype("<i8").tobytes())
                before = chunk if n == 2 else np.asarray(prev[base : base + chunk.size])
                after = np.full(chunk.size, -1, dtype=np.int32)
                trie.scan(chunk, before, after, s, e, base, n)
                cur[base : base + chunk.size] = after
            if trie.close_scan(n, min_count) == 0:
                break  # nothing survived: longer n-grams cannot be candidates
    fingerprint = corpus_fingerprint or _hex(digest, length_digest)
    return _top(trie, int(vocab_size), n_fgrams, max_n, min_count, fingerprint, int((ends - starts).sum()))


def _ids_file(path: Path, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    return np.memmap(path, dtype=np.int32, mode="w+", shape=(n,))


def _check_chunk(chunk: np.ndarray, vocab_size: int) -> None:
    if chunk.size and (chunk.min() < 0 or chunk.max() >= vocab_size):
        bad = chunk[(chunk < 0) | (chunk >= vocab_size)][0]
        raise ValueError(f"token id {int(bad)} is outside the vocabulary [0, {vocab_size})")


def _inside(starts: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """(size,) bool: position inside one of the documents [starts[d], ends[d])."""
    delta = np.zeros(size + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:-1]) > 0


def _hex(*digests) -> str:
    return hashlib.sha256(b"".join(d.digest() for d in digests)).hexdigest()


def _top(trie: _Trie, V: int, n_fgrams: int, max_n: int, min_count: int, fingerprint: str, n_tokens: int):
    nodes = np.flatnonzero(trie.alive[V : trie.n_nodes]) + V
    if n_fgrams > nodes.size:
        raise ValueError(
            f"scone.n_fgrams={n_fgrams} exceeds the {nodes.size} candidate f-grams of the corpus "
            f"({n_tokens} tokens, max_n={max_n}, min_count={min_count}): lower n_fgrams or use more data"
        )
    order = np.lexsort((trie.level[nodes], trie.first[nodes], -trie.count[nodes]))[:n_fgrams]
    kept = nodes[order]
    return Fgrams(
        tokens=trie.token_rows(kept, max_n),
        lengths=trie.level[kept].copy(),
        counts=trie.count[kept].copy(),
        vocab_size=V,
        max_n=max_n,
        min_count=min_count,
        corpus_fingerprint=fingerprint,
        n_tokens=n_tokens,
        n_candidates=int(nodes.size),
    )


def discover_fgrams(sequences: Iterable, vocab_size: int, n_fgrams: int, **kwargs) -> Fgrams:
    """`discover_fgrams_flat` over an in-memory iterable of token sequences (one per document)."""
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    ends = np.cumsum(lengths)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return discover_fgrams_flat(flat, ends - lengths, ends, vocab_size, n_fgrams, **kwargs)


def save_fgrams(path: str | os.PathLike, fgrams: Fgrams) -> Path:
    """One ``.npz`` with the arrays and a JSON ``metadata`` string (like the L3 allocation file); atomic."""
    meta = {k: getattr(fgrams, k) for k in ("vocab_size", "max_n", "min_count", "corpus_fingerprint")}
    meta |= {
        "format": _FORMAT,
        "n_fgrams": fgrams.n_fgrams,
        "n_tokens": fgrams.n_tokens,
        "n_candidates": fgrams.n_candidates,
    }
    return save_npz(path, meta, tokens=fgrams.tokens, lengths=fgrams.lengths, counts=fgrams.counts)


def load_fgrams(path: str | os.PathLike) -> Fgrams:
    """Read a ``save_fgrams`` file; a corrupt or inconsistent file raises ValueError."""
    arrays, meta = load_npz(path, ("tokens", "lengths", "counts"), "f-gram", _FORMAT)
    try:
        fg = Fgrams(
            **arrays,
            **{
                k: meta[k]
                for k in (
                    "vocab_size",
                    "max_n",
                    "min_count",
                    "corpus_fingerprint",
                    "n_tokens",
                    "n_candidates",
                )
            },
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: arrays do not match the recorded metadata: {exc}") from exc
    if fg.n_fgrams != meta.get("n_fgrams"):
        raise ValueError(f"{path}: holds {fg.n_fgrams} f-grams, metadata says {meta.get('n_fgrams')}")
    return fg
