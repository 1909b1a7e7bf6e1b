import numpy as np
import pytest
import torch

from workloads.data import PackedDataset, prepare

T = 16


@pytest.fixture
def stream() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 60000, size=1000, dtype=np.uint16)  # 1000 tokens -> 62 windows of 16


def test_windows_are_the_shift_by_one_of_the_stream(stream):
    dataset = PackedDataset(stream, seq_len=T)
    assert len(dataset) == (len(stream) - 1) // T == 62
    for i in [0, 1, 30, len(dataset) - 1, -1]:
        x, y = dataset[i]
        start = (i % len(dataset)) * T
        assert x.dtype == torch.int64 and x.shape == (T,)
        np.testing.assert_array_equal(x.numpy(), stream[start : start + T])
        np.testing.assert_array_equal(y.numpy(), stream[start + 1 : start + T + 1])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_batches_cover_each_window_once_in_a_seeded_order(stream):
    dataset = PackedDataset(stream, seq_len=T, seed=3)
    batches = list(dataset.batches(batch_size=8))
    assert len(batches) == 62 // 8
    order = dataset.order(0)
    assert sorted(order.tolist()) == list(range(62))  # a permutation: each window once
    for b, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (8, T) and x.dtype == y.dtype == torch.int64
        starts = order[b * 8 : (b + 1) * 8] * T
        np.testing.assert_array_equal(x.numpy(), stream[starts[:, None] + np.arange(T)])
        np.testing.assert_array_equal(y.numpy(), stream[starts[:, None] + np.arange(1, T + 1)])
    np.testing.assert_array_equal(dataset.order(0), PackedDataset(stream, T, seed=3).order(0))
    assert not np.array_equal(dataset.order(0), dataset.order(1))
    assert not np.array_equal(dataset.order(0), PackedDataset(stream, T, seed=4).order(0))
    assert PackedDataset(stream, T, shuffle=False).order(5).tolist() == list(range(62))
    assert sum(x.shape[0] for x, _ in dataset.batches(8, drop_last=False)) == 62


def test_ranks_get_disjoint_windows_and_equal_batch_counts(stream):
    dataset = PackedDataset(stream, seq_len=T, seed=1)
    per_rank = [list(dataset.batches(batch_size=4, rank=r, world_size=3)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    seen = [tuple(row.tolist()) for batches in per_rank for x, _ in batches for row in x]
    assert len(seen) == len(set(seen)) == 3 * (62 // 3 // 4) * 4
    with pytest.raises(ValueError, match="rank must be in"):
        next(dataset.batches(4, rank=3, world_size=3))


def test_packing_errors_name_the_value(stream):
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1, got 0"):
        PackedDataset(stream, seq_len=0)
    with pytest.raises(ValueError, match="holds no window of seq_len=1000"):
        PackedDataset(stream, seq_len=1000)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        next(PackedDataset(stream, T).batches(0))


def test_prepared_data_packs_its_memmap(tmp_path, small_config):
    prepared = prepare(small_config, cache_dir=tmp_path / "cache")
    train = prepared.packed("train", seed=0)
    assert train.seq_len == small_config.seq_len and train.shuffle
    x, y = next(train.batches(batch_size=4))
    assert x.shape == (4, small_config.seq_len) and x.dtype == torch.int64
    assert int(x.max()) < prepared.vocab_size
    val = prepared.packed("val")
    assert not val.shuffle
    x0, y0 = val[0]
    np.testing.assert_array_equal(x0.numpy(), prepared.val.tokens[: small_config.seq_len])
    np.testing.assert_array_equal(y0.numpy(), prepared.val.tokens[1 : small_config.seq_len + 1])
