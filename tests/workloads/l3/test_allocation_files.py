"""The uniform allocation (the ablation) and allocation files: save/load with metadata, and the errors for
files that are corrupt or do not match their metadata."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.l3.allocation import (
    Allocation,
    allocate_from_counts,
    count_phrases,
    load_allocation,
    save_allocation,
    uniform_allocate,
)
from workloads.l3.layer import L3Layer


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50), st.integers(1, 20), st.integers(0, 10**6))
def test_uniform_invariants(vocab_size, cap, seed):
    budget = vocab_size + seed % (vocab_size * (cap - 1) + 1)
    rows = uniform_allocate(vocab_size, budget, cap)
    assert rows.dtype == np.int64 and rows.shape == (vocab_size,)
    assert rows.sum() == budget and rows.min() >= 1 and rows.max() <= cap
    assert rows.max() - rows.min() <= 1
    assert np.all(np.diff(rows) <= 0)  # the extra rows go to the lowest token ids
    np.testing.assert_array_equal(rows, uniform_allocate(vocab_size, budget, cap))


def test_uniform_by_hand():
    assert uniform_allocate(3, 8, 4).tolist() == [3, 3, 2]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)  # Zipf-like token ids: frequent ones repeat, so phrases grow
    corpus = [rng.zipf(1.3, size=rng.integers(5, 40)) % 256 for _ in range(100)]
    pc = count_phrases(corpus, 256)
    rows = allocate_from_counts(pc, 600, 8)
    path = save_allocation(
        tmp_path / "alloc.npz",
        rows,
        vocab_size=256,
        budget=600,
        cap=8,
        corpus_fingerprint=pc.fingerprint,
        n_tokens=pc.n_tokens,
    )
    loaded = load_allocation(path)
    assert isinstance(loaded, Allocation)
    np.testing.assert_array_equal(loaded.counts, rows)
    assert (loaded.vocab_size, loaded.budget, loaded.cap, loaded.method) == (256, 600, 8, "lzw")
    assert (loaded.corpus_fingerprint, loaded.n_tokens) == (pc.fingerprint, pc.n_tokens)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    layer = L3Layer(4, loaded.counts, 2, 3)  # the file alone rebuilds the layer's row layout
    assert layer.vocab_size == 256 and layer.n_rows == 600
    np.testing.assert_array_equal(layer.counts().numpy(), rows)


def test_save_rejects_counts_that_break_the_metadata(tmp_path):
    with pytest.raises(ValueError, match="counts sum to 5, not the budget 6"):
        save_allocation(
            tmp_path / "a.npz", [2, 3], vocab_size=2, budget=6, cap=4, corpus_fingerprint="x", n_tokens=1
        )


def test_load_corrupted_and_tampered_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz at all")
    with pytest.raises(ValueError, match="garbage.npz: not a readable allocation file"):
        load_allocation(garbage)

    not_npz = tmp_path / "plain.npy"
    np.save(not_npz, np.arange(3))
    with pytest.raises(ValueError, match="plain.npy: not a readable allocation file"):
        load_allocation(not_npz)

    good = save_allocation(
        tmp_path / "good.npz", [3, 3], vocab_size=2, budget=6, cap=4, corpus_fingerprint="x", n_tokens=1
    )
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.npz: not a readable allocation file"):
        load_allocation(truncated)

    tampered = tmp_path / "tampered.npz"
    with np.load(good) as data:
        meta = data["metadata"]
    np.savez(tampered, counts=np.array([4, 3], dtype=np.int64), metadata=meta)
    with pytest.raises(ValueError, match="tampered.npz: counts do not match .*sum to 7, not the budget 6"):
        load_allocation(tampered)
