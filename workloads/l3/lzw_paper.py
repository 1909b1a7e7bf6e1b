"""`allocation: lzw-paper`: the published reference loop of the L3 allocation, bit-exact (L3_SPEC §2.1).
Details: docs/workloads.md#workloadsl3lzw_paper."""

from collections.abc import Iterable, Iterator

import numba
import numpy as np

from workloads.l3 import lzw_trie
from workloads.l3.allocation import PhraseCounter, PhraseCounts, allocate_from_counts, check_budget


@numba.njit(cache=True)
def _parse_lines(tokens, offsets, vocab_size, table, n_nodes, count, last_token, parent):
    """The reference loop over lines ``tokens[offsets[s]:offsets[s+1]]`` on the trie of `lzw_trie`
    (node = phrase; a phrase toks[last:cur] is in the dictionary iff its trie node exists)."""
    V = np.int64(vocab_size)
    n_slots = table.shape[0] // 2
    mask = n_slots - 1
    for s in range(offsets.shape[0] - 1):
        start, n = offsets[s], offsets[s + 1] - offsets[s]
        last, cur = np.int64(0), np.int64(1)
        while cur < n:
            node = tokens[start + last]  # toks[last:cur] with cur = last + 1: a single token, always known
            cur += 1
            found = -1  # the node of toks[last:cur] when it exists
            while cur < n:
                key = node * V + tokens[start + cur - 1]
                slot = lzw_trie._find_slot(table, mask, key)
                if table[2 * slot] != key:
                    break
                node = table[2 * slot + 1]
                cur += 1
            # toks[last:cur-1] is `node` (known); toks[last:cur] is node + toks[cur-1]
            count[node] += 1  # cur > last + 1 always holds here: the single token matched
            tok = tokens[start + cur - 1]
            key = node * V + tok
            slot = lzw_trie._find_slot(table, mask, key)
            if table[2 * slot] == key:
                found = table[2 * slot + 1]
            if found >= 0:
                count[found] = 1  # the assignment: an existing phrase falls back to 1
            else:
                if n_nodes == count.shape[0]:
                    count = lzw_trie._grown(count, n_nodes)
                    last_token = lzw_trie._grown(last_token, n_nodes)
                    parent = lzw_trie._grown(parent, n_nodes)
                count[n_nodes], last_token[n_nodes], parent[n_nodes] = 1, tok, node
                table[2 * slot], table[2 * slot + 1] = key, n_nodes
                n_nodes += 1
                if 2 * (n_nodes - V) > n_slots:  # keep the load at most 1/2, as lzw_trie does
                    table = lzw_trie._doubled(table)
                    n_slots *= 2
                    mask = n_slots - 1
            last = cur
            cur += 1
    return table, n_nodes, count, last_token, parent


class PaperPhraseCounter(PhraseCounter):
    """Stage 1 by the reference loop (`_parse_lines`); feed it lines (`paper_lines`)."""

    def _parse(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self._token_hash.update(tokens.astype("<i8", copy=False))
        self._length_hash.update(np.diff(offsets).astype("<i8", copy=False))
        state = (self._table, self._n_nodes, self._count, self._last, self._parent)
        state = _parse_lines(tokens, offsets, self.vocab_size, *state)
        self._table, self._n_nodes, self._count, self._last, self._parent = state
        self.n_tokens += int(tokens.size)
        self.n_sequences += int(offsets.size - 1)


def count_phrases_paper(lines: Iterable, vocab_size: int) -> PhraseCounts:
    """Stage 1 of `lzw-paper` over token sequences that are lines, one dictionary across all of them."""
    counter = PaperPhraseCounter(vocab_size)
    counter.update(lines)
    return counter.result()


def paper_lines(documents: Iterable[str], tokenizer) -> Iterator[list[int]]:
    """The reference loop's unit: each text line, its newline included, tokenized on its own (a file read
    line by line splits after every "\\n"; a document's last line may have none)."""
    for text in documents:
        lines = text.split("\n")
        pieces = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        for encoding in tokenizer.encode_batch(pieces, add_special_tokens=False):
            yield encoding.ids


def lzw_paper_allocate(lines: Iterable, vocab_size: int, budget: int, cap: int = 512) -> np.ndarray:
    """`lzw-paper` end to end: the reference loop's counts, then the shared stage 2."""
    check_budget(vocab_size, budget, cap)
    return allocate_from_counts(count_phrases_paper(lines, vocab_size), budget, cap)
