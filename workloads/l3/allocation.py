"""LZW-based embedding allocation for Large Lookup Layers (L3_SPEC §2, "Algorithm 1").
Details: docs/workloads.md#workloadsl3allocation."""

import hashlib
import multiprocessing
import operator
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np

from workloads.l3 import lzw_trie
from workloads.npz_files import load_npz, save_npz

DEFAULT_CHUNK_TOKENS = 1 << 22
# Hash keys are parent * V + token in int64; V < 2**31 keeps them exact for up to 2**32 phrases.
MAX_VOCAB_SIZE = (1 << 31) - 1
AllocationMethod = Literal["lzw", "lzw-paper", "uniform"]
_FORMAT = "isosparse.l3.allocation/v1"


def _positive_int(name: str, value: int) -> int:
    value = operator.index(value)  # ints and numpy ints; a float is a TypeError, not silently truncated
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_budget(vocab_size: int, budget: int, cap: int) -> tuple[int, int, int]:
    """Validate (V, budget, cap) for an allocation: 1 <= V, 1 <= cap, V <= budget <= V * cap."""
    vocab_size = _positive_int("vocab_size", vocab_size)
    budget, cap = operator.index(budget), operator.index(cap)
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if budget < vocab_size:
        raise ValueError(f"budget {budget} < vocab_size {vocab_size}: every token needs at least one row")
    if budget > vocab_size * cap:
        raise ValueError(
            f"budget {budget} > vocab_size * cap = {vocab_size} * {cap} = {vocab_size * cap}: "
            "the cap cannot be met"
        )
    return vocab_size, budget, cap


@dataclass(frozen=True)
class PhraseCounts:
    """The LZW dictionary after a parse: node i is a phrase; nodes 0..V-1 are the single tokens in id order.

    last_token/parent/count: (n_nodes,) int64; parent is -1 for single tokens, and a phrase's token path is
    its parent's path plus ``last_token``. Nodes appear in insertion order (the sort's tie order).
    fingerprint: sha256 of the token stream (token ids and sequence lengths as int64), independent of how
    the stream was chunked.
    """

    vocab_size: int
    last_token: np.ndarray
    parent: np.ndarray
    count: np.ndarray
    n_tokens: int
    n_sequences: int
    fingerprint: str

    def __post_init__(self) -> None:
        n = self.count.shape[0]
        if self.last_token.shape != (n,) or self.parent.shape != (n,) or n < self.vocab_size:
            raise ValueError(
                f"PhraseCounts arrays disagree: count {self.count.shape}, last_token {self.last_token.shape},"
                f" parent {self.parent.shape}, vocab_size {self.vocab_size}"
            )

    @property
    def n_nodes(self) -> int:
        return int(self.count.shape[0])


def _out_of_vocab(arrays: list[np.ndarray], vocab_size: int) -> ValueError:
    """The error for the first token id outside [0, vocab_size) in ``arrays``."""
    for arr in arrays:
        bad = arr[(arr < 0) | (arr >= vocab_size)]
        if bad.size:
            return ValueError(
                f"token id {int(bad[0])} is outside the vocabulary [0, {vocab_size}) "
                f"(vocab_size {vocab_size})"
            )
    return ValueError(f"a token id is outside the vocabulary [0, {vocab_size})")


def _batches(sequences: Iterable, vocab_size: int, chunk_tokens: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Concatenate sequences into (tokens int64, offsets int64) chunks of about ``chunk_tokens`` tokens."""
    pending: list[np.ndarray] = []
    n_pending = 0
    for i, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(
                f"sequence {i} must be a 1-D sequence of integer token ids, got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        pending.append(arr)
        n_pending += arr.size
        if n_pending >= chunk_tokens:
            yield _concat(pending, vocab_size)
            pending, n_pending = [], 0
    if pending:
        yield _concat(pending, vocab_size)


def _concat(arrays: list[np.ndarray], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # An unsafe cast may wrap a huge uint64 id negative; the range check still catches it, and the error
    # reports the original id.
    tokens = np.concatenate(arrays, dtype=np.int64, casting="unsafe")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise _out_of_vocab(arrays, vocab_size)
    return tokens, offsets


class PhraseCounter:
    """Streaming stage 1: one LZW dictionary across every batch fed in; the parse never crosses sequences.

    ``update`` accepts any iterable of int sequences and converts it in chunks; ``update_flat`` is the fast
    path for already concatenated tokens plus sequence offsets. Feeding the same sequences in any chunking
    gives identical counts and fingerprint.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        if self.vocab_size > MAX_VOCAB_SIZE:
            raise ValueError(f"vocab_size {self.vocab_size} > {MAX_VOCAB_SIZE} is not supported")
        capacity = 2 * self.vocab_size + 1024  # grows geometrically
        self._count = np.zeros(capacity, dtype=np.int64)
        self._last = np.zeros(capacity, dtype=np.int64)
        self._parent = np.zeros(capacity, dtype=np.int64)
        self._last[: self.vocab_size] = np.arange(self.vocab_size)
        self._parent[: self.vocab_size] = -1
        self._table = lzw_trie.new_table(lzw_trie.MIN_SLOTS)
        self._n_nodes = self.vocab_size
        self.n_tokens = 0
        self.n_sequences = 0
        self._token_hash = hashlib.sha256()
        self._length_hash = hashlib.sha256()

    def update(self, sequences: Iterable, *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
        chunk_tokens = _positive_int("chunk_tokens", chunk_tokens)
        for tokens, offsets in _batches(sequences, self.vocab_size, chunk_tokens):
            self._parse(tokens, offsets)

    def update_flat(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Parse sequences ``tokens[offsets[s]:offsets[s+1]]``; offsets start at 0 and end at len(tokens)."""
        tokens, offsets = np.asarray(tokens), np.asarray(offsets, dtype=np.int64)
        if tokens.ndim != 1 or (tokens.size and tokens.dtype.kind not in "iu"):
            raise ValueError(f"tokens must be a 1-D integer array, got {tokens.shape} {tokens.dtype}")
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != tokens.size:
            raise ValueError(f"offsets must run from 0 to len(tokens) = {tokens.size}, got {offsets[:3]}...")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must be non-decreasing")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise _out_of_vocab([tokens], self.vocab_size)
        self._parse(np.ascontiguousarray(tokens, dtype=np.int64), np.ascontiguousarray(offsets))

    def _parse(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self._token_hash.update(tokens.astype("<i8", copy=False))  # no copy on little-endian hosts
        self._length_hash.update(np.diff(offsets).astype("<i8", copy=False))
        state = (self._table, self._n_nodes, self._count, self._last, self._parent)
        state = lzw_trie.parse_chunk(tokens, offsets, self.vocab_size, *state)
        self._table, self._n_nodes, self._count, self._last, self._parent = state
        self.n_tokens += int(tokens.size)
        self.n_sequences += int(offsets.size - 1)

    def result(self) -> PhraseCounts:
        n = self._n_nodes
        digest = hashlib.sha256(self._token_hash.digest() + self._length_hash.digest()).hexdigest()
        return PhraseCounts(
            vocab_size=self.vocab_size,
            last_token=self._last[:n].copy(),
            parent=self._parent[:n].copy(),
            count=self._count[:n].copy(),
            n_tokens=self.n_tokens,
            n_sequences=self.n_sequences,
            fingerprint=digest,
        )


def count_phrases(
    sequences: Iterable, vocab_size: int, *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS
) -> PhraseCounts:
    """Stage 1 of Algorithm 1 over the whole corpus with one dictionary (streamed in chunks)."""
    counter = PhraseCounter(vocab_size)
    counter.update(sequences, chunk_tokens=chunk_tokens)
    return counter.result()


Shard = Iterable | Callable[[], Iterable]


def _count_shard(shard: Shard, vocab_size: int, chunk_tokens: int) -> PhraseCounts:
    return count_phrases(shard() if callable(shard) else shard, vocab_size, chunk_tokens=chunk_tokens)


def count_phrases_sharded(
    shards: Iterable,
    vocab_size: int,
    workers: int | None = None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> PhraseCounts:
    """Count each shard with its own dictionary in its own process, then ``merge_phrase_counts`` in order.

    A shard is an iterable of sequences or a zero-argument callable returning one (e.g. a
    ``functools.partial`` that streams a file); with more than one worker it must be picklable. Workers are
    started with 'spawn'. One shard gives exactly ``count_phrases`` of it; see ``merge_phrase_counts``.
    """
    shards = list(shards)
    if not shards:
        raise ValueError("count_phrases_sharded needs at least one shard, got 0")
    vocab_size = _positive_int("vocab_size", vocab_size)
    if workers is None:
        workers = min(len(shards), os.cpu_count() or 1)
    n_workers = _positive_int("workers", workers)
    if n_workers == 1 or len(shards) == 1:
        parts = [_count_shard(shard, vocab_size, chunk_tokens) for shard in shards]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(n_workers, len(shards)), mp_context=context) as pool:
            parts = list(pool.map(_count_shard, shards, repeat(vocab_size), repeat(chunk_tokens)))
    return merge_phrase_counts(parts)


def merge_phrase_counts(parts: list[PhraseCounts]) -> PhraseCounts:
    """Union shard dictionaries by phrase (token path), summing counts.

    Merged node order: single tokens in id order, then phrases at first appearance in (shard index, shard
    node id) order. This is NOT the single-pass result over the concatenated shards: every shard's parse
    starts from an empty dictionary, so shard k never sees phrases learnt in shards < k, which gives short
    phrases higher counts and fewer long phrases. One part is returned unchanged (identical to single
    pass). The allocations stay close and get closer as shards grow: python-docs as BPE-16k lines (2.5M
    tokens) in 4 shards, budget 16V, cap 512: correlation 0.999 and sum |a - b| / budget = 0.055 against
    single pass (16 shards: 0.995, 0.11). The fingerprint of several parts is a sha256 over theirs.
    """
    if not parts:
        raise ValueError("merge_phrase_counts needs at least one PhraseCounts, got 0")
    vocab_sizes = sorted({p.vocab_size for p in parts})
    if len(vocab_sizes) != 1:
        raise ValueError(f"cannot merge phrase counts with different vocab sizes {vocab_sizes}")
    if len(parts) == 1:
        return parts[0]
    V = vocab_sizes[0]
    capacity = sum(p.n_nodes for p in parts) - (len(parts) - 1) * V  # upper bound: no growth needed
    count = np.zeros(capacity, dtype=np.int64)
    last, parent = np.zeros(capacity, dtype=np.int64), np.zeros(capacity, dtype=np.int64)
    last[:V], parent[:V] = np.arange(V), -1
    n_slots = lzw_trie.MIN_SLOTS
    while n_slots < 2 * (capacity - V):
        n_slots *= 2
    table, n_nodes = lzw_trie.new_table(n_slots), V
    for p in parts:
        table, n_nodes, count, last, parent = lzw_trie.merge_into(
            table, n_nodes, count, last, parent, V, p.count, p.last_token, p.parent
        )
    fingerprint = hashlib.sha256(("merge:" + ",".join(p.fingerprint for p in parts)).encode()).hexdigest()
    return PhraseCounts(
        vocab_size=V,
        last_token=last[:n_nodes].copy(),
        parent=parent[:n_nodes].copy(),
        count=count[:n_nodes].copy(),
        n_tokens=sum(p.n_tokens for p in parts),
        n_sequences=sum(p.n_sequences for p in parts),
        fingerprint=fingerprint,
    )


def allocate_from_counts(phrases: PhraseCounts, budget: int, cap: int = 512) -> np.ndarray:
    """Stage 2: stable sort of all phrases by count (descending, ties in node order); each phrase in turn
    gives a row to its last token unless it has ``cap``, starting from 1 row per token, until ``budget``.

    Returns (V,) int64 rows per token, each in [1, cap], summing to ``budget``.
    """
    vocab_size, budget, cap = check_budget(phrases.vocab_size, budget, cap)
    order = np.argsort(-phrases.count, kind="stable")
    rows, placed = lzw_trie.walk_allocation(order, phrases.last_token, vocab_size, cap, budget)
    if placed < budget:
        raise ValueError(
            f"the corpus phrases ran out after placing {placed} of {budget} rows (vocab_size {vocab_size}, "
            f"cap {cap}, {phrases.n_nodes} phrases from {phrases.n_tokens} tokens); use a larger corpus or "
            "a smaller budget"
        )
    return rows


def lzw_allocate(sequences: Iterable, vocab_size: int, budget: int, cap: int = 512) -> np.ndarray:
    """Algorithm 1 end to end: ``allocate_from_counts(count_phrases(sequences, vocab_size), budget, cap)``."""
    check_budget(vocab_size, budget, cap)  # fail before parsing a large corpus
    return allocate_from_counts(count_phrases(sequences, vocab_size), budget, cap)


def uniform_allocate(vocab_size: int, budget: int, cap: int = 512) -> np.ndarray:
    """The ablation: every token gets budget // V rows and the first budget % V token ids one more."""
    vocab_size, budget, cap = check_budget(vocab_size, budget, cap)
    rows = np.full(vocab_size, budget // vocab_size, dtype=np.int64)
    rows[: budget % vocab_size] += 1
    return rows


@dataclass(frozen=True)
class Allocation:
    """Rows per token plus how they were made; constructing one checks length, sum and cap."""

    counts: np.ndarray
    vocab_size: int
    budget: int
    cap: int
    corpus_fingerprint: str
    n_tokens: int
    method: AllocationMethod = "lzw"

    def __post_init__(self) -> None:
        check_budget(self.vocab_size, self.budget, self.cap)
        if self.method not in ("lzw", "lzw-paper", "uniform"):
            raise ValueError(f"method must be 'lzw', 'lzw-paper' or 'uniform', got {self.method!r}")
        c = self.counts
        if c.shape != (self.vocab_size,) or c.dtype != np.int64:
            raise ValueError(f"counts must be ({self.vocab_size},) int64, got {c.shape} {c.dtype}")
        if int(c.sum()) != self.budget:
            raise ValueError(f"counts sum to {int(c.sum())}, not the budget {self.budget}")
        if c.min() < 1 or c.max() > self.cap:
            raise ValueError(f"counts span [{c.min()}, {c.max()}], outside [1, cap={self.cap}]")


def save_allocation(
    path: str | os.PathLike,
    counts: np.ndarray,
    *,
    vocab_size: int,
    budget: int,
    cap: int,
    corpus_fingerprint: str,
    n_tokens: int,
    method: AllocationMethod = "lzw",
) -> Path:
    """Write one ``.npz`` holding ``counts`` and a JSON ``metadata`` string; the write is atomic."""
    alloc = Allocation(
        np.asarray(counts, dtype=np.int64),
        int(vocab_size),
        int(budget),
        int(cap),
        str(corpus_fingerprint),
        int(n_tokens),
        method,
    )
    meta = {k: getattr(alloc, k) for k in ("vocab_size", "budget", "cap", "corpus_fingerprint", "n_tokens")}
    meta |= {"format": _FORMAT, "method": alloc.method}
    return save_npz(path, meta, counts=alloc.counts)


def load_allocation(path: str | os.PathLike) -> Allocation:
    """Read a ``save_allocation`` file; a corrupt file or counts that break its metadata raise ValueError."""
    arrays, meta = load_npz(path, ("counts",), "allocation", _FORMAT)
    counts = arrays["counts"]
    try:
        return Allocation(
            counts=counts,
            vocab_size=meta["vocab_size"],
            budget=meta["budget"],
            cap=meta["cap"],
            corpus_fingerprint=meta["corpus_fingerprint"],
            n_tokens=meta["n_tokens"],
            method=meta["method"],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: counts do not match the recorded metadata: {exc}") from exc
