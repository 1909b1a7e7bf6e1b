"""The sorted (block-diagonal) L3 lookup equals the per-position reference, values and gradients."""

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


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sorted_matches_reference_on_named_shapes(name, tied):
    counts, ids = CASES[name]
    dim = 6
    args = _case(counts, ids, dim, dim if tied else 5, seed=len(name), tied=tied)
    ref_out, ref_grads = _run("reference", *args)
    out, grads = _run("sorted", *args)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_sorted_matches_reference_on_random_shapes(seed):
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
    out, grads = _run("sorted", *args, seed=seed)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_empty_input_gives_empty_output():
    q, ids, keys, values, offsets = _case([2, 3], [], 4, 3, seed=0)
    q, keys, values = q.float(), keys.float(), values.float()  # float32: every impl takes it (triton no fp64)
    for impl in IMPLS:
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
    out = l3_lookup(q, ids, keys, values, _offsets(counts), "sorted")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_softmax_is_exactly_uniform_for_equal_scores():
    """Zero queries give uniform weights: the output is each token's mean value row."""
    counts = [3, 1, 4]
    values = torch.arange(8 * 2, dtype=torch.float64).reshape(8, 2)
    keys = torch.randn(8, 5, dtype=torch.float64)
    ids = torch.tensor([2, 0, 1])
    out = l3_lookup(torch.zeros(3, 5, dtype=torch.float64), ids, keys, values, _offsets(counts), "sorted")
    expected = torch.stack([values[4:8].mean(0), values[0:3].mean(0), values[3:4].mean(0)])
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
def test_sorted_gradients_of_a_subset_of_inputs(tied, needs):
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
    got = torch.autograd.grad(l3_lookup(*args, "sorted"), wanted, grad_out)
    want = torch.autograd.grad(l3_lookup(*args, "reference"), wanted, grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sorted_under_bfloat16_autocast_is_close_to_the_float32_reference():
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
        out = l3_lookup(q, ids, keys, values, _offsets(counts), "sorted")
    got = torch.autograd.grad(out, [q, keys, values], grad_out)
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in got)
    torch.testing.assert_close(out.float(), want_out, rtol=0.05, atol=0.05)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_sorted_without_grad_equals_with_grad():
    counts, ids = CASES["ragged"]
    args = _case(counts, ids, 6, 5, seed=2)
    with torch.no_grad():
        out = l3_lookup(*args, "sorted")
    assert not out.requires_grad
    torch.testing.assert_close(out, l3_lookup(*args, "sorted"), rtol=0, atol=0)


def test_sorted_double_backward_raises():
    counts, ids = CASES["ragged"]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 5, seed=2)
    out = l3_lookup(q, ids_t, keys, values, offsets, "sorted")
    (gq,) = torch.autograd.grad(out.sum(), [q], create_graph=True)
    with pytest.raises(RuntimeError):
        gq.sum().backward()
