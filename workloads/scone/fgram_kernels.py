"""Numba kernels of SCONE f-gram discovery and longest-suffix matching (L3_SPEC §6; Yu et al. Alg. 1-2).
Details: docs/workloads.md#workloadssconefgram_kernels."""

import numba
import numpy as np

from workloads.l3.lzw_trie import _EMPTY, _doubled, _find_slot, _grown


@numba.njit(cache=True, inline="always")
def _lookup(table, mask, key):
    """The node of ``key``, or -1."""
    slot = _find_slot(table, mask, key)
    if table[2 * slot] == key:
        return table[2 * slot + 1]
    return -1


@numba.njit(cache=True)
def count_pass(
    tokens,
    prev,
    cur,
    starts,
    ends,
    base_pos,
    n,
    vocab_size,
    table,
    n_nodes,
    count,
    first,
    parent,
    last,
    alive,
):
    """Scan n of discovery over the documents tokens[starts[d]:ends[d]] of one chunk.

    prev[i]: node of the (n-1)-gram starting at i (-1: none; for n = 2 the tokens themselves). The
    n-gram at i is a candidate when prev[i] (its prefix) and prev[i+1] (its suffix) are alive; its count
    is incremented, inserting it (count 0, first = base_pos + i) when new, and cur[i] gets its node.
    `table` holds this scan's n-grams only. tokens: (N,) int64 in [0, V); prev, cur: (N,) integer.
    Node arrays grow as needed; returns (table, n_nodes, count, first, parent, last, alive).
    """
    V = np.int64(vocab_size)
    n_slots = table.shape[0] // 2
    mask = n_slots - 1
    n_level = 0
    for d in range(starts.shape[0]):
        for i in range(starts[d], ends[d] - n + 1):
            p, q = np.int64(prev[i]), np.int64(prev[i + 1])
            if p < 0 or q < 0 or alive[p] == 0 or alive[q] == 0:
                continue
            key = p * V + tokens[i + n - 1]
            slot = _find_slot(table, mask, key)
            if table[2 * slot] == key:
                node = table[2 * slot + 1]
                count[node] += 1
                cur[i] = node
                continue
            if n_nodes == count.shape[0]:
                count, first = _grown(count, n_nodes), _grown(first, n_nodes)
                parent, last = _grown(parent, n_nodes), _grown(last, n_nodes)
                alive = _grown(alive, n_nodes)
            count[n_nodes], first[n_nodes] = 1, base_pos + i
            parent[n_nodes], last[n_nodes], alive[n_nodes] = p, tokens[i + n - 1], 0
            table[2 * slot], table[2 * slot + 1] = key, n_nodes
            cur[i] = n_nodes
            n_nodes += 1
            n_level += 1
            if 2 * n_level > n_slots:
                table = _doubled(table)
                n_slots *= 2
                mask = n_slots - 1
    return table, n_nodes, count, first, parent, last, alive


@numba.njit(cache=True)
def build_suffix_trie(fgrams, lengths, vocab_size):
    """The reversed trie of f-grams (S, K) int64 (row r holds lengths[r] tokens, padded).

    Returns (table, terminal): terminal[node] is the f-gram row ending at that node, or -1. Every suffix
    of an f-gram is a node, so a walk never stops early at a suffix that missed the top S.
    """
    V = np.int64(vocab_size)
    n_slots = 1 << 10
    while n_slots < 2 * fgrams.shape[0] * max(fgrams.shape[1] - 1, 1):
        n_slots *= 2
    table = np.full(2 * n_slots, _EMPTY, dtype=np.int64)
    mask = n_slots - 1
    terminal = np.full(V + fgrams.shape[0] * max(fgrams.shape[1] - 1, 1), -1, dtype=np.int64)
    n_nodes = V
    for r in range(fgrams.shape[0]):
        node = fgrams[r, lengths[r] - 1]
        for j in range(lengths[r] - 2, -1, -1):
            key = node * V + fgrams[r, j]
            slot = _find_slot(table, mask, key)
            if table[2 * slot] != key:
                table[2 * slot], table[2 * slot + 1] = key, n_nodes
                n_nodes += 1
            node = table[2 * slot + 1]
        terminal[node] = r
    return table, terminal[:n_nodes].copy()


@numba.njit(cache=True)
def longest_suffix(tokens, first, lo, hi, max_n, vocab_size, table, terminal, out):
    """out[i] = the f-gram row of the longest f-gram tokens[j:i+1] with first <= j < i (-1: none), i in
    [lo, hi). Walks back from tokens[i] through the reversed trie: at most max_n - 1 probes."""
    V = np.int64(vocab_size)
    mask = table.shape[0] // 2 - 1
    for i in range(lo, hi):
        node = tokens[i]
        best = -1
        if node >= 0 and node < V:
            for d in range(1, max_n):
                if i - d < first:
                    break
                prev = tokens[i - d]
                if prev < 0 or prev >= V:
                    break
                node = _lookup(table, mask, node * V + prev)
                if node < 0:
                    break
                if terminal[node] >= 0:
                    best = terminal[node]
        out[i] = best


@numba.njit(cache=True)
def longest_suffix_rows(tokens, start, max_n, vocab_size, table, terminal, out):
    """`longest_suffix` on each row of (B, L) tokens for columns [start, L): out (B, L - start)."""
    scratch = np.empty(tokens.shape[1], dtype=np.int64)
    for b in range(tokens.shape[0]):
        longest_suffix(tokens[b], 0, start, tokens.shape[1], max_n, vocab_size, table, terminal, scratch)
        for i in range(start, tokens.shape[1]):
            out[b, i - start] = scratch[i]
