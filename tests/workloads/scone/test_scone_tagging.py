"""Longest-suffix tagging on hand-worked sequences, and the kernel against the readable reference."""

import numpy as np

from workloads.scone.discovery import Fgrams, discover_fgrams
from workloads.scone.tagging import SuffixMatcher, longest_suffix_reference, open_tags, tag_split

DOCS = [[1, 2, 3, 1, 2, 3, 1, 2], [1, 2, 3, 4]]


def _top5():
    # Rows 0..4 = (1,2), (1,2,3), (2,3), (1,2,3,1), (2,3,1): see test_scone_discovery.RANKED.
    return discover_fgrams(DOCS, 10, 5, max_n=4, min_count=2)


def test_hand_worked_tags():
    seq = [5, 1, 2, 3, 1, 2, 9, 3, 1]
    # i2: (1,2) row 0; i3: (1,2,3) row 1 beats (2,3); i4: (1,2,3,1) row 3 beats (2,3,1) row 4;
    # i5: (1,2) (312 is not kept); i8: (3,1) is only a suffix of a kept f-gram, not kept itself → -1.
    want = [-1, -1, 0, 1, 3, 0, -1, -1, -1]
    assert SuffixMatcher(_top5()).tag(np.array(seq)).tolist() == want
    assert longest_suffix_reference(seq, _top5().as_tuples()).tolist() == want


def test_tag_last_and_stream_chunks(tmp_path):
    matcher = SuffixMatcher(_top5())
    history = np.array([[7, 1, 2, 3, 1], [1, 2, 3, 4, 4], [0, 0, 0, 1, 2]])
    assert matcher.tag_last(history).tolist() == [3, -1, 0]
    stream = np.random.default_rng(1).integers(0, 5, size=1000)
    tags = tag_split(matcher, stream, tmp_path / "t.bin", chunk_tokens=7)
    assert tags.dtype == np.int32 and np.array_equal(tags, matcher.tag(stream))
    assert np.array_equal(open_tags(tmp_path / "t.bin", 1000), tags)


def test_kernel_equals_reference_on_random_sets():
    rng = np.random.default_rng(0)
    for trial in range(20):
        docs = [rng.integers(0, 4, size=rng.integers(2, 60)) for _ in range(3)]
        fg = discover_fgrams(docs, 4, 1, max_n=int(rng.integers(2, 6)), min_count=1)
        fg = discover_fgrams(docs, 4, int(rng.integers(1, fg.n_candidates + 1)), max_n=fg.max_n, min_count=1)
        seq = rng.integers(0, 4, size=int(rng.integers(0, 50)))
        want = longest_suffix_reference(seq, fg.as_tuples())
        assert SuffixMatcher(fg).tag(seq).tolist() == want.tolist(), trial


def test_a_deeper_non_terminal_suffix_keeps_the_shorter_match():
    # (3,1,2) is a trie node (suffix of the kept 4312) but not kept: position 2 of 3 1 2 matches (1,2).
    fg = Fgrams(
        tokens=np.array([[1, 2, -1, -1], [4, 3, 1, 2]]), lengths=np.array([2, 4]), counts=np.array([9, 5]),
        vocab_size=5, max_n=4, min_count=1, corpus_fingerprint="hand", n_tokens=0, n_candidates=2,
    )  # fmt: skip
    assert SuffixMatcher(fg).tag(np.array([3, 1, 2, 4, 3, 1, 2])).tolist() == [-1, -1, 0, -1, -1, -1, 1]
