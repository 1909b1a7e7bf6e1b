"""The fast L3 lookups (sorted, block-diagonal; small, padded gather; auto) equal the per-position
reference, values and gradients."""

import pytest
import torch

from workloads.kernels.l3_lookup.op import IMPLS, l3_lookup


def _offsets(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.tensor(counts).cumsum(0)])


def _case(counts, ids, dim, d_emb, seed, tied=False):
    g = torch.Generator().manual_seed(seed)
    v = sum(counts)
    q = torch.randn(len(ids), dim, generator=g, dtype=torch.float64).requires_grad_()
    keys = torch.randn(v, dim, generator=g, dtype=torch.float64).requires_grad_()
    values = keys if tied else torch.randn(v, d_emb, generator=g, dtype=torch.float64).requires_grad_()
    return q, torch.tensor(ids, dtype=torch.int64), keys, values, _offsets(counts)


def _run(impl, q, ids, keys, values, offsets, seed=0):
    leaves = [q, keys] if values is keys else [q, keys, values]
    out = l3_lookup(q, ids, keys, values, offsets, impl)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=out.dtype)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    return out, grads


CASES = {
    # counts per token, ids of the positions
    "ragged": ([3, 1, 7, 2, 5], [0, 2, 2, 4, 1, 3, 2, 0]),
    "one_row_each": ([1, 1, 1, 1], [3, 1, 0, 1]),
    "single_position": ([4, 9, 2], [1]),
    "cap_row_token": ([1, 512, 3], [1, 0, 1, 2, 1]),
    "all_same_id": ([2, 6], [1] * 13),
    "unused_tokens": ([5, 1, 1, 8, 1, 1], [3, 3, 0]),
    "power_of_two_edges": ([1, 2, 3, 4, 5, 8, 9, 16, 17], list(range(9)) * 2),
    "bin_edges": ([5, 6, 7, 9, 10, 11, 13, 15, 33, 41], [i for i in range(10) for _ in range(i % 6 + 5)]),
}


FAST = ("sorted", "small", "auto")


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_paths_match_reference_on_named_shapes(name, tied, impl):
    counts, ids = CASES[name]
    dim = 6
    args = _case(counts, ids, dim, dim if tied else 5, seed=len(name), tied=tied)
    ref_out, ref_grads = _run("reference", *args)
    out, grads = _run(impl, *args)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_match_reference_on_random_shapes(seed, impl):
    g = torch.Generator().manual_seed(seed)
    vocab = int(torch.randint(1, 40, (1,), generator=g))
    counts = torch.randint(1, 70, (vocab,), generator=g).tolist()
    n = int(torch.randint(1, 90, (1,), generator=g))
    # Zipf-ish ids: a few frequent tokens, many repeats, some tokens never seen.
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    dim, d_emb = int(torch.randint(1, 17, (1,), generator=g)), int(torch.randint(1, 17, (1,), generator=g))
    tied = seed % 3 == 0
    args = _case(counts, ids, dim, dim if tied else d_emb, seed=seed, tied=tied)
    ref_out, ref_grads = _run("reference", *args, seed=seed)
    out, grads = _run(impl, *args, seed=seed)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_empty_input_gives_empty_output():
    q, ids, keys, values, offsets = _case([2, 3], [], 4, 3, seed=0)
    q, keys, values = q.float(), keys.float(), values.float()  # float32: every impl takes it (triton no fp64)
    for impl in (*IMPLS, "auto"):
        out = l3_lookup(q, ids, keys, values, offsets, impl)
        assert out.shape == (0, 3)


def test_float32_agreement_at_realistic_scale():
    """float32, wider rows and a few hundred positions: the two paths agree to ~1e-5 relative."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 300, (64,), generator=g).tolist()
    ids = torch.randint(0, 64, (300,), generator=g)
    q = torch.randn(300, 64, generator=g)
    keys = torch.randn(sum(counts), 64, generator=g) * 0.3
    values = torch.randn(sum(counts), 32, generator=g)
    ref = l3_lookup(q, ids, keys, values, _offsets(counts), "reference")
    for impl in ("sorted", "small"):
        out = l3_lookup(q, ids, keys, values, _offsets(counts), impl)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_softmax_is_exactly_uniform_for_equal_scores():
    """Zero queries give uniform weights: the output is each token's mean value row."""
    counts = [3, 1, 4]
    values = torch.arange(8 * 2, dtype=torch.float64).reshape(8, 2)
    keys = torch.randn(8, 5, dtype=torch.float64)
    ids = torch.tensor([2, 0, 1])
    expected = torch.stack([values[4:8].mean(0), values[0:3].mean(0), values[3:4].mean(0)])
    for impl in FAST:
        out = l3_lookup(torch.zeros(3, 5, dtype=torch.float64), ids, keys, values, _offsets(counts), impl)
        torch.testing.assert_close(out, expected)


def test_unknown_impl_is_rejected():
    q, ids, keys, values, offsets = _case([1], [0], 2, 2, seed=0)
    with pytest.raises(ValueError, match="unknown L3 lookup impl 'fast'"):
        l3_lookup(q, ids, keys, values, offsets, "fast")


def test_bin_sizes_are_half_octaves_and_cover_n():
    from workloads.kernels.l3_lookup.sorted import _padded_size

    n = torch.arange(1, 5000)
    size = _padded_size(n)
    assert torch.all(size >= n) and torch.all(size < 1.5 * n)
    expected = [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16, 16, 16, 16, 24]
    assert _padded_size(torch.arange(1, 18)).tolist() == expected


@pytest.mark.parametrize(
    "tied, needs",
    [(False, "q"), (False, "keys"), (False, "values"), (False, "keys values"), (True, "q"), (True, "keys")],
)
@pytest.mark.parametrize("impl", ["sorted", "small"])
def test_gradients_of_a_subset_of_inputs(tied, needs, impl):
    """Only the inputs that require grad get one (tied: keys gets both contributions), each equal to
    the reference's."""
    counts, ids = CASES["bin_edges"]
    args = _case(counts, ids, 6, 6, seed=3, tied=tied)
    q, _, keys, values, _ = args
    leaves = {"q": q, "keys": keys} if tied else {"q": q, "keys": keys, "values": values}
    for name, leaf in leaves.items():
        leaf.requires_grad_(name in needs.split())
    wanted = [leaves[name] for name in needs.split()]
    grad_out = torch.randn(len(ids), 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = torch.autograd.grad(l3_lookup(*args, impl), wanted, grad_out)
    want = torch.autograd.grad(l3_lookup(*args, "reference"), wanted, grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["sorted", "small"])
def test_bfloat16_autocast_is_close_to_the_float32_reference(impl):
    """bf16 matmuls (softmax in fp32): bf16 output, fp32 gradients, close to the fp32 reference."""
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(1, 40, (12,), generator=g).tolist()
    ids = torch.randint(0, 12, (50,), generator=g)
    q = torch.randn(50, 16, generator=g).requires_grad_()
    keys = (torch.randn(sum(counts), 16, generator=g) * 0.3).requires_grad_()
    values = torch.randn(sum(counts), 8, generator=g).requires_grad_()
    grad_out = torch.randn(50, 8, generator=g)
    want_out = l3_lookup(q, ids, keys, values, _offsets(counts), "reference")
    want = torch.autograd.grad(want_out, [q, keys, values], grad_out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = l3_lookup(q, ids, keys, values, _offsets(counts), impl)
    got = torch.autograd.grad(out, [q, keys, values], grad_out)
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in got)
    torch.testing.assert_close(out.float(), want_out, rtol=0.05, atol=0.05)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("impl", ["sorted", "small"])
def test_without_grad_equals_with_grad(impl):
    counts, ids = CASES["ragged"]
    args = _case(counts, ids, 6, 5, seed=2)
    with torch.no_grad():
        out = l3_lookup(*args, impl)
    assert not out.requires_grad
    # small: the no-grad CPU kernel sums in another order than the autograd path (not bit-equal)
    tol = 0 if impl == "sorted" else 1e-12
    torch.testing.assert_close(out, l3_lookup(*args, impl), rtol=tol, atol=tol)


def test_sorted_double_backward_raises():
    counts, ids = CASES["ragged"]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 5, seed=2)
    out = l3_lookup(q, ids_t, keys, values, offsets, "sorted")
    (gq,) = torch.autograd.grad(out.sum(), [q], create_graph=True)
    with pytest.raises(RuntimeError):
        gq.sum().backward()


def test_auto_picks_small_up_to_the_threshold_and_sorted_above():
    from workloads.kernels.l3_lookup.op import SMALL_MAX_POSITIONS, SMALL_MAX_POSITIONS_PADDED, resolve_impl

    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu, 1) == "small"
    assert resolve_impl("auto", cpu, SMALL_MAX_POSITIONS, kernel_ok=True) == "small"
    assert resolve_impl("auto", cpu, SMALL_MAX_POSITIONS + 1, kernel_ok=True) == "sorted"
    assert resolve_impl("auto", cpu, SMALL_MAX_POSITIONS_PADDED) == "small"
    assert resolve_impl("auto", cpu, SMALL_MAX_POSITIONS_PADDED + 1) == "sorted"
    assert resolve_impl("auto", cpu) == "sorted"  # unknown size: never small
    assert resolve_impl("reference", cpu, 1) == "reference"


def test_size_index_round_trips_and_ceil_log2_is_exact():
    from workloads.kernels.l3_lookup.sorted import _ceil_log2, _padded_size, _size_index, _size_of_index

    n = torch.arange(1, 1 << 14)
    want = torch.tensor([(int(k) - 1).bit_length() for k in n])
    assert torch.equal(_ceil_log2(n), want)
    padded = _padded_size(n)
    index = _size_index(padded)
    assert [_size_of_index(int(i)) for i in index] == padded.tolist()
    assert _size_index(torch.tensor([1, 2, 3, 4, 6, 8, 12])).tolist() == [0, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_small_cpu_kernel_matches_reference_without_grad(name, tied):
    """The numba kernel (CPU, no autograd) on every named shape, float64 and float32."""
    counts, ids = CASES[name]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 6 if tied else 5, seed=len(name), tied=tied)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        args = (q.detach().to(dtype), ids_t, keys.detach().to(dtype), values.detach().to(dtype), offsets)
        with torch.no_grad():
            want = l3_lookup(*args, "reference")
            got = l3_lookup(*args, "small")
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sorted_sparse_table_gradients_equal_the_reference_and_touch_only_the_batch_rows(name, tied):
    """sparse_grad: the table gradients are sparse COO tensors whose sum equals the reference's dense
    gradient, and whose indices are only rows owned by an id of the batch (no other row exists)."""
    counts, ids = CASES[name]
    q, t, keys, values, offsets = _case(counts, ids, 6, 6 if tied else 5, seed=len(name), tied=tied)
    leaves = [q, keys] if tied else [q, keys, values]
    grad_out = torch.randn(
        len(ids), values.shape[1], generator=torch.Generator().manual_seed(2), dtype=q.dtype
    )
    out = l3_lookup(q, t, keys, values, offsets, "sorted", sparse_grad=True)
    got = torch.autograd.grad(out, leaves, grad_out)
    want = torch.autograd.grad(l3_lookup(q, t, keys, values, offsets, "reference"), leaves, grad_out)
    owned = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in sorted(set(ids))])
    assert not got[0].is_sparse
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    for table_grad, ref in zip(got[1:], want[1:], strict=True):
        assert table_grad.is_sparse
        rows = table_grad.coalesce().indices()[0]
        assert torch.equal(rows, owned)  # exactly the batch ids' rows, each once after coalescing
        torch.testing.assert_close(table_grad.to_dense(), ref, rtol=1e-10, atol=1e-12)
