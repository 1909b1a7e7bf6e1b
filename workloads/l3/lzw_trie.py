"""Numba kernels for the LZW (LZ78-style) phrase trie of L3 embedding allocation (L3_SPEC §2, Algorithm 1).

Nodes 0..V-1 are the single tokens; every longer phrase is a node whose (parent node, last token) edge lives
in an open-addressing hash table (linear probing, load <= 0.5) keyed by ``parent * V + token``.
"""

import numba
import numpy as np

# Table layout: slot i holds its key at table[2 * i] and its child node at table[2 * i + 1], so one probe
# touches one cache line. An empty slot has key -1 (keys are >= 0).
_EMPTY = -1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
MIN_SLOTS = 1 << 10


def new_table(n_slots: int) -> np.ndarray:
    """An empty hash table with ``n_slots`` slots (a power of two)."""
    return np.full(2 * n_slots, _EMPTY, dtype=np.int64)


@numba.njit(cache=True, inline="always")
def _home_slot(key, mask):
    h = np.uint64(key) * _GOLDEN
    h ^= h >> _SHIFT
    return np.int64(h & np.uint64(mask))


@numba.njit(cache=True, inline="always")
def _find_slot(table, mask, key):
    """The slot holding ``key``, or the empty slot where it would go."""
    slot = _home_slot(key, mask)
    while True:
        k = table[2 * slot]
        if k == key:
            return slot
        if k == _EMPTY:
            return slot
        slot = (slot + 1) & mask


@numba.njit(cache=True)
def _doubled(table):
    """The table rehashed into twice as many slots.

    Home slots use the low bits of the hash, so an entry at old slot i moves to about i or i + (old slot
    count):
    walking the old table in order writes two nearly sequential streams (cache friendly, unlike random
    inserts).
    """
    n_slots = table.shape[0]  # new slot count = 2 * old slot count = len(old table)
    out = np.full(2 * n_slots, _EMPTY, dtype=np.int64)
    mask = n_slots - 1
    for i in range(n_slots // 2):
        key = table[2 * i]
        if key != _EMPTY:
            slot = _find_slot(out, mask, key)
            out[2 * slot] = key
            out[2 * slot + 1] = table[2 * i + 1]
    return out


@numba.njit(cache=True)
def _grown(a, n_used):
    out = np.empty(2 * a.shape[0], dtype=a.dtype)
    out[:n_used] = a[:n_used]
    return out


@numba.njit(cache=True)
def parse_chunk(tokens, offsets, vocab_size, table, n_nodes, count, last_token, parent):
    """Greedy LZ78 parse of ``tokens[offsets[s]:offsets[s+1]]`` for every s, updating the trie in place.

    tokens: (N,) int64, already checked to lie in [0, vocab_size). offsets: (S+1,) int64, non-decreasing.
    table: (2 * n_slots,) int64 hash table. count/last_token/parent: (capacity,) int64, nodes < n_nodes used.
    Returns (table, n_nodes, count, last_token, parent): arrays are replaced when they had to grow.
    """
    V = np.int64(vocab_size)
    n_slots = table.shape[0] // 2
    mask = n_slots - 1
    for s in range(offsets.shape[0] - 1):
        p = offsets[s]
        end = offsets[s + 1]
        while p < end:
            node = tokens[p]  # every single token is already a phrase
            p += 1
            while True:
                if p == end:  # the phrase reaches the end of the sequence: count it, insert nothing
                    count[node] += 1
                    break
                tok = tokens[p]
                key = node * V + tok
                slot = _find_slot(table, mask, key)
                if table[2 * slot] == key:  # the phrase extends: keep walking down the trie
                    node = table[2 * slot + 1]
                    p += 1
                    continue
                # Longest match found: count it, insert phrase + next token with count 1, skip that token.
                count[node] += 1
                if n_nodes == count.shape[0]:
                    count = _grown(count, n_nodes)
                    last_token = _grown(last_token, n_nodes)
                    parent = _grown(parent, n_nodes)
                count[n_nodes] = 1
                last_token[n_nodes] = tok
                parent[n_nodes] = node
                table[2 * slot] = key
                table[2 * slot + 1] = n_nodes
                n_nodes += 1
                if 2 * (n_nodes - V) > n_slots:
                    table = _doubled(table)
                    n_slots *= 2
                    mask = n_slots - 1
                p += 1
                break
    return table, n_nodes, count, last_token, parent


@numba.njit(cache=True)
def merge_into(table, n_nodes, count, last_token, parent, vocab_size, s_count, s_last, s_parent):
    """Add one shard's trie (arrays s_*) into the merged trie by phrase path, summing counts.

    Shard nodes are visited in id order, so a parent is always mapped before its child; new phrases are
    appended in that order. Returns (table, n_nodes, count, last_token, parent) like ``parse_chunk``.
    """
    V = np.int64(vocab_size)
    n_slots = table.shape[0] // 2
    mask = n_slots - 1
    mapping = np.empty(s_count.shape[0], dtype=np.int64)
    for t in range(V):
        mapping[t] = t
        count[t] += s_count[t]
    for node in range(V, s_count.shape[0]):
        key = mapping[s_parent[node]] * V + s_last[node]
        slot = _find_slot(table, mask, key)
        if table[2 * slot] == key:
            merged = table[2 * slot + 1]
            count[merged] += s_count[node]
            mapping[node] = merged
            continue
        if n_nodes == count.shape[0]:
            count = _grown(count, n_nodes)
            last_token = _grown(last_token, n_nodes)
            parent = _grown(parent, n_nodes)
        count[n_nodes] = s_count[node]
        last_token[n_nodes] = s_last[node]
        parent[n_nodes] = mapping[s_parent[node]]
        table[2 * slot] = key
        table[2 * slot + 1] = n_nodes
        mapping[node] = n_nodes
        n_nodes += 1
        if 2 * (n_nodes - V) > n_slots:
            table = _doubled(table)
            n_slots *= 2
            mask = n_slots - 1
    return table, n_nodes, count, last_token, parent


@numba.njit(cache=True)
def walk_allocation(order, last_token, vocab_size, cap, budget):
    """Steps 3-4 of Algorithm 1: walk phrases in ``order``, each giving a row to its last token below cap.

    Returns (rows per token (V,) int64, rows placed). Rows placed < budget means the phrases ran out.
    """
    rows = np.ones(vocab_size, dtype=np.int64)
    placed = np.int64(vocab_size)
    for i in range(order.shape[0]):
        if placed >= budget:
            break
        t = last_token[order[i]]
        if rows[t] < cap:
            rows[t] += 1
            placed += 1
    return rows, placed
