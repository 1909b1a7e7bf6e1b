"""F-gram discovery on hand-worked sequences (counts, pruning and ranking written out by hand)."""

import numpy as np
import pytest

from workloads.scone.discovery import discover_fgrams, discover_fgrams_flat, load_fgrams, save_fgrams

# doc A = 1 2 3 1 2 3 1 2 (stream positions 0..7), doc B = 1 2 3 4 (positions 8..11); min_count 2, K 4.
# Scan 2 (every bigram kept): 12 ×4 (first at 0), 23 ×3 (1), 31 ×2 (2), 34 ×1 (10).
# Scan 3: 123 ×3 (0), 231 ×2 (1), 312 ×2 (2), 234 ×1 (9) → 234 dropped (count < 2).
# Scan 4: 1231 ×2 (0), 2312 ×2 (1), 3123 ×1 (2) → dropped; 1234 is no candidate (suffix 234 was dropped).
# Rank: count desc, then first occurrence, then length.
DOCS = [[1, 2, 3, 1, 2, 3, 1, 2], [1, 2, 3, 4]]
RANKED = [(1, 2), (1, 2, 3), (2, 3), (1, 2, 3, 1), (2, 3, 1), (2, 3, 1, 2), (3, 1), (3, 1, 2), (3, 4)]
COUNTS = [4, 3, 3, 2, 2, 2, 2, 2, 1]


def test_hand_worked_discovery():
    fg = discover_fgrams(DOCS, 10, 9, max_n=4, min_count=2)
    assert fg.as_tuples() == RANKED
    assert fg.counts.tolist() == COUNTS
    assert fg.lengths.tolist() == [len(g) for g in RANKED]
    assert fg.n_candidates == 9 and fg.n_tokens == 12
    assert fg.tokens[0].tolist() == [1, 2, -1, -1]


def test_top_s_is_a_prefix_of_the_ranking_and_k_limits_length():
    assert discover_fgrams(DOCS, 10, 4, max_n=4, min_count=2).as_tuples() == RANKED[:4]
    k3 = discover_fgrams(DOCS, 10, 7, max_n=3, min_count=2).as_tuples()
    assert k3 == [(1, 2), (1, 2, 3), (2, 3), (2, 3, 1), (3, 1), (3, 1, 2), (3, 4)]


def test_min_count_prunes_from_the_second_scan_on():
    # min_count 3: bigrams all kept; trigrams: only 123 (×3); 4-grams need 231 → none.
    fg = discover_fgrams(DOCS, 10, 5, max_n=4, min_count=3)
    assert fg.as_tuples() == [(1, 2), (1, 2, 3), (2, 3), (3, 1), (3, 4)]
    assert fg.n_candidates == 5


def test_ngrams_do_not_cross_documents_and_chunking_does_not_matter():
    flat = np.array([1, 2, 3, 1, 2, 3, 1, 2, 0, 1, 2, 3, 4, 0])  # 0 = a separator outside the documents
    starts, ends = np.array([0, 9]), np.array([8, 13])
    whole = discover_fgrams_flat(flat, starts, ends, 10, 9, max_n=4, min_count=2)
    tiny = discover_fgrams_flat(flat, starts, ends, 10, 9, max_n=4, min_count=2, chunk_tokens=1)
    assert whole.as_tuples() == tiny.as_tuples() == RANKED  # no (2, 0) or (0, 1)
    assert whole.counts.tolist() == COUNTS
    assert whole.corpus_fingerprint == tiny.corpus_fingerprint
    assert whole.corpus_fingerprint == discover_fgrams(DOCS, 10, 9, max_n=4, min_count=2).corpus_fingerprint


def test_matches_a_brute_force_reference_on_random_corpora():
    rng = np.random.default_rng(0)
    for _ in range(5):
        docs = [rng.integers(0, 6, size=rng.integers(0, 40)) for _ in range(rng.integers(1, 8))]
        n_docs_tokens = sum(d.size for d in docs)
        counts: dict[tuple, int] = {}
        first: dict[tuple, int] = {}
        pos = 0
        survivors: set = set()
        for n in range(2, 5):
            level: dict[tuple, int] = {}
            pos = 0
            for d in docs:
                for i in range(d.size - n + 1):
                    g = tuple(int(t) for t in d[i : i + n])
                    if n > 2 and (g[:-1] not in survivors or g[1:] not in survivors):
                        continue
                    level[g] = level.get(g, 0) + 1
                    first.setdefault(g, pos + i)
                pos += d.size
            kept = {g for g, c in level.items() if n == 2 or c >= 2}
            survivors |= kept
            counts |= {g: level[g] for g in kept}
        want = sorted(survivors, key=lambda g: (-counts[g], first[g], len(g)))
        if not want:
            continue
        fg = discover_fgrams(docs, 6, len(want), max_n=4, min_count=2)
        assert fg.as_tuples() == want and fg.n_tokens == n_docs_tokens


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match=r"scone\.n_fgrams=10 exceeds the 9 candidate"):
        discover_fgrams(DOCS, 10, 10, max_n=4, min_count=2)
    with pytest.raises(ValueError, match=r"scone\.max_n must be an integer >= 2, got 1"):
        discover_fgrams(DOCS, 10, 3, max_n=1)
    with pytest.raises(ValueError, match=r"scone\.min_count"):
        discover_fgrams(DOCS, 10, 3, min_count=0)
    with pytest.raises(ValueError, match="token id 12 is outside the vocabulary"):
        discover_fgrams([[1, 12]], 10, 1)


def test_save_load_round_trip(tmp_path):
    fg = discover_fgrams(DOCS, 10, 6, max_n=4, min_count=2)
    back = load_fgrams(save_fgrams(tmp_path / "f.npz", fg))
    assert back.as_tuples() == fg.as_tuples() and back.counts.tolist() == fg.counts.tolist()
    assert (back.max_n, back.min_count, back.n_tokens, back.n_candidates) == (4, 2, 12, 9)
    assert back.corpus_fingerprint == fg.corpus_fingerprint
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable f-gram file"):
        load_fgrams(tmp_path / "bad.npz")
