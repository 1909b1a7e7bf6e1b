"""`allocation: lzw-paper` against L3_SPEC §2.1: its worked vectors by hand, and the reference loop as
written there (a dict of tuples) on many random, ragged and degenerate line sets, count for count."""

from types import SimpleNamespace

import numpy as np
import pytest

from workloads.l3.allocation import allocate_from_counts, count_phrases
from workloads.l3.lzw_paper import PaperPhraseCounter, count_phrases_paper, lzw_paper_allocate, paper_lines


def reference(lines, vocab_size):
    """L3_SPEC §2.1's loop, verbatim: {phrase: count} in insertion order (singles first, at 0)."""
    count = {(t,): 0 for t in range(vocab_size)}
    for toks in lines:
        toks, n = tuple(toks), len(toks)
        last, cur = 0, 1
        while cur < n:
            while cur < n and toks[last:cur] in count:
                cur += 1
            if cur > last + 1:
                count[toks[last : cur - 1]] += 1
            count[toks[last:cur]] = 1  # an assignment, not += 1
            last = cur
            cur += 1
    return count


def as_dict(phrases):
    """PhraseCounts → {token path: count} in node order."""
    paths = []
    for node in range(phrases.n_nodes):
        parent = phrases.parent[node]
        paths.append((*(paths[parent] if parent >= 0 else ()), int(phrases.last_token[node])))
    return dict(zip(paths, phrases.count.tolist(), strict=True))


def nonzero(counts):
    return {p: c for p, c in counts.items() if c}


@pytest.mark.parametrize(("lines", "expected"), [
    ([[0, 1, 2]], {(0,): 1, (0, 1): 1}),  # token 2 uncounted
    ([[0, 1, 0, 1]], {(0,): 2, (0, 1): 1}),  # the full match (0,1) at the end is not credited
    ([[0, 1, 3]] * 4, {(0,): 1, (0, 1): 4, (0, 1, 3): 1}),
    ([[2]], {}),  # a 1-token line contributes nothing
    ([[0, 1, 5]] * 5 + [[7, 8, 0, 1]], {(0,): 2, (0, 1): 1, (0, 1, 5): 1, (7,): 1, (7, 8): 1}),
])  # fmt: skip
def test_the_spec_s_worked_vectors(lines, expected):
    assert nonzero(as_dict(count_phrases_paper(lines, 9))) == expected
    assert nonzero(reference(lines, 9)) == expected


def test_a_count_falls_back_to_one_only_at_a_line_end():
    counts = as_dict(count_phrases_paper([[0, 1, 5]] * 5, 9))
    assert counts[(0, 1)] == 5
    assert as_dict(count_phrases_paper([[0, 1, 5]] * 5 + [[7, 8, 0, 1]], 9))[(0, 1)] == 1


@pytest.mark.parametrize("seed", range(40))
def test_the_kernel_is_the_reference_loop_on_random_lines(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(1, 12))
    lines = []
    for _ in range(int(rng.integers(0, 60))):
        n = int(rng.choice([0, 1, 2, 3, int(rng.integers(4, 40))]))  # empty, 1-token, short, long lines
        zipf = np.minimum(rng.zipf(1.5, n) - 1, vocab - 1)  # repetitive, so phrases grow and reset
        lines.append(zipf.astype(np.int64) if seed % 2 else rng.integers(0, vocab, n))
    got = as_dict(count_phrases_paper(lines, vocab))
    want = reference(lines, vocab)
    assert list(got) == list(want) and got == want  # the same phrases, insertion order, counts


def test_chunking_does_not_change_the_counts():
    rng = np.random.default_rng(7)
    lines = [rng.integers(0, 6, int(rng.integers(0, 30))) for _ in range(300)]
    whole = count_phrases_paper(lines, 6)
    counter = PaperPhraseCounter(6)
    counter.update(lines, chunk_tokens=17)
    parts = counter.result()
    assert as_dict(parts) == as_dict(whole) and parts.fingerprint == whole.fingerprint


def test_lzw_and_lzw_paper_differ_only_at_sequence_ends():
    mid = [[0, 1, 2, 0, 1, 3, 0, 1, 2, 4]]  # lzw counts the final match (4,) +1; lzw-paper leaves it
    lzw, paper = nonzero(as_dict(count_phrases(mid, 5))), nonzero(as_dict(count_phrases_paper(mid, 5)))
    assert {p: c for p, c in lzw.items() if p != (4,)} == paper and lzw[(4,)] == 1 and (4,) not in paper


def test_allocation_walks_the_paper_counts():
    lines = [[0, 1, 3]] * 4  # (0,1):4 first, then (0,):1 and (0,1,3):1 in insertion order, then zeros
    np.testing.assert_array_equal(lzw_paper_allocate(lines, 4, budget=6, cap=3), [2, 2, 1, 1])
    np.testing.assert_array_equal(
        lzw_paper_allocate(lines, 4, 6, 3), allocate_from_counts(count_phrases_paper(lines, 4), 6, 3)
    )


class Recorder:
    """A tokenizer that records the pieces it is asked to encode (each piece's ids: its length)."""

    def __init__(self):
        self.pieces = []

    def encode_batch(self, pieces, add_special_tokens):
        assert add_special_tokens is False
        self.pieces += pieces
        return [SimpleNamespace(ids=[len(p)]) for p in pieces]


def test_lines_are_tokenized_each_on_its_own_newline_included():
    tok = Recorder()
    assert list(paper_lines(["a\nbb\n\nabc", "b\n", ""], tok)) == [[2], [3], [1], [3], [2]]
    assert tok.pieces == ["a\n", "bb\n", "\n", "abc", "b\n"]  # a last line without newline stays


def test_a_job_with_lzw_paper_allocates_by_the_loop_on_its_corpus_lines(tmp_path_factory):
    from workloads.data import DataConfig
    from workloads.jobs.setup import base_model_config, corpus_for, prepare_data, resolve_model_config
    from workloads.jobs.spec import ModelOverrides, ModelSpec

    cache = tmp_path_factory.getbasetemp() / "jobs-cache"  # shared with the jobs tests
    spec = ModelSpec("debug", "l3", ModelOverrides(vocab_size=512, l3_allocation="lzw-paper"))
    data = prepare_data(DataConfig(max_documents=50, val_fraction=0.2), base_model_config(spec), cache)
    corpus = corpus_for(spec, data, cache)
    base = resolve_model_config(spec, corpus)
    texts = list(data.allocation_texts())
    assert [data.tokenizer.encode(t).ids for t in texts] == [d.tolist() for d in data.allocation_sequences()]
    lines = list(paper_lines(texts, data.tokenizer))
    assert sum(map(len, lines)) > 0 and len(lines) > len(texts)
    got = corpus.allocate(base.l3.budget)
    want = lzw_paper_allocate(lines, base.vocab_size, base.l3.budget, base.l3.cap)
    np.testing.assert_array_equal(got, want)
    docs = allocate_from_counts(count_phrases(data.allocation_sequences(), base.vocab_size), base.l3.budget,
                                base.l3.cap)  # fmt: skip
    assert not np.array_equal(got, docs)  # lines and their ends: another allocation than lzw's
