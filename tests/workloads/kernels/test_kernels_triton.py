"""The Triton L3 lookup equals the reference: values and every gradient, tied and untied, both backward
modes, on ragged and degenerate shapes. On CPU the kernels run under the Triton interpreter (conftest)."""

import pytest
import torch

from workloads.kernels.l3_lookup import triton as tk
from workloads.kernels.l3_lookup.op import l3_lookup, resolve_impl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _offsets(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.tensor(counts).cumsum(0)])


def _case(counts, ids, dim, d_emb, seed, tied=False, dtype=torch.float32):
    """(q, ids, keys, values, offsets) on DEVICE; keys scaled so softmaxes are neither flat nor one-hot."""
    g = torch.Generator().manual_seed(seed)
    v = sum(counts)
    q = torch.randn(len(ids), dim, generator=g)
    keys = torch.randn(v, dim, generator=g) * 0.7
    values = keys if tied else torch.randn(v, d_emb, generator=g)
    tensors = [t.to(DEVICE, dtype).requires_grad_() for t in (q, keys)]
    tensors.append(tensors[1] if tied else values.to(DEVICE, dtype).requires_grad_())
    q, keys, values = tensors
    return q, torch.tensor(ids, dtype=torch.int64, device=DEVICE), keys, values, _offsets(counts).to(DEVICE)


def _grads(fn, q, ids, keys, values, offsets, seed=0):
    """fn's output and the gradients of its float leaves for a fixed random grad_out."""
    leaves = [q, keys] if values is keys else [q, keys, values]
    out = fn(q, ids, keys, values, offsets)
    g = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
    return out, torch.autograd.grad(out, leaves, grad_out)


def _reference(q, ids, keys, values, offsets, seed=0):
    """The reference in float64 on the same inputs (tied stays tied)."""
    leaves = [t.detach().double().requires_grad_() for t in (q, keys)]
    leaves.append(leaves[1] if values is keys else values.detach().double().requires_grad_())
    out, grads = _grads(
        lambda *a: l3_lookup(*a, impl="reference"), leaves[0], ids, leaves[1], leaves[2], offsets, seed
    )
    return out, grads


def _triton(deterministic: bool):
    return lambda *a: tk.l3_lookup_triton(*a, deterministic=deterministic)


def _assert_close(got, want, tol):
    torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)


CASES = {
    # counts per token, ids of the positions
    "ragged": ([3, 1, 7, 2, 5], [0, 2, 2, 4, 1, 3, 2, 0]),
    "one_row_each": ([1, 1, 1, 1], [3, 1, 0, 1]),
    "single_position": ([4, 9, 2], [1]),
    "cap_row_token": ([1, 512, 3], [1, 0, 1, 2, 1]),
    "repeated_ids": ([2, 6], [1] * 13),
    "unused_tokens": ([5, 1, 1, 8, 1, 1], [3, 3, 0]),
    # row counts around the row tile (64 at dim 6): one short, exact, one over, two tiles and a bit
    "tile_edges": ([63, 64, 65, 130, 1], [0, 1, 2, 3, 4, 3, 2, 1, 0, 2, 3]),
}


@pytest.mark.parametrize("deterministic", [True, False], ids=["segment_sums", "atomics"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_matches_reference_on_named_shapes(name, tied, deterministic):
    counts, ids = CASES[name]
    args = _case(counts, ids, 6, 6 if tied else 5, seed=len(name), tied=tied)
    want_out, want = _reference(*args)
    out, got = _grads(_triton(deterministic), *args)
    assert out.dtype == torch.float32 and len(got) == len(want)
    _assert_close(out, want_out, 2e-5)
    for a, b in zip(got, want, strict=True):
        _assert_close(a, b, 2e-5)


@pytest.mark.parametrize("seed", range(6))
def test_triton_matches_reference_on_random_shapes(seed):
    """Zipf-ish ids (repeats, unseen tokens), widths that are not powers of two, N from 1 to 70."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(torch.randint(1, 30, (1,), generator=g))
    counts = torch.randint(1, 90, (vocab,), generator=g).tolist()
    n = int(torch.randint(1, 70, (1,), generator=g))
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    dim, d_emb = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
    tied = seed % 3 == 0
    args = _case(counts, ids, dim, dim if tied else d_emb, seed=seed, tied=tied)
    want_out, want = _reference(*args, seed=seed)
    out, got = _grads(_triton(seed % 2 == 0), *args, seed=seed)
    _assert_close(out, want_out, 2e-5)
    for a, b in zip(got, want, strict=True):
        _assert_close(a, b, 5e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_inputs_accumulate_in_fp32(dtype, tol):
    """bf16/fp16 tables and queries: output and gradients in the input dtype, within its rounding of
    the fp64 reference computed from the same (rounded) inputs."""
    counts, ids = CASES["tile_edges"]
    args = _case(counts, ids, 6, 5, seed=3, dtype=dtype)
    want_out, want = _reference(*args)
    out, got = _grads(_triton(True), *args)
    assert out.dtype == dtype and all(t.dtype == dtype for t in got)
    _assert_close(out, want_out, tol)
    for a, b in zip(got, want, strict=True):
        _assert_close(a, b, tol)


def test_autocast_gives_the_autocast_dtype_and_fp32_gradients():
    counts, ids = CASES["ragged"]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 5, seed=1)
    with torch.autocast(q.device.type, dtype=torch.bfloat16):
        out = tk.l3_lookup_triton(q, ids_t, keys, values, offsets)
    grads = torch.autograd.grad(out, [q, keys, values], torch.ones_like(out))
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in grads)
    want_out, _ = _reference(q, ids_t, keys, values, offsets)
    _assert_close(out, want_out, 0.02)


def test_deterministic_backward_is_bitwise_reproducible():
    counts, ids = CASES["repeated_ids"]
    args = _case(counts, ids, 6, 5, seed=4)
    first = _grads(_triton(True), *args)[1]
    second = _grads(_triton(True), *args)[1]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("tied, needs", [(False, "q"), (False, "keys"), (False, "values"), (True, "keys")])
def test_gradients_of_a_subset_of_inputs(tied, needs):
    counts, ids = CASES["tile_edges"]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 6, seed=3, tied=tied)
    leaves = {"q": q, "keys": keys} if tied else {"q": q, "keys": keys, "values": values}
    for name, leaf in leaves.items():
        leaf.requires_grad_(name in needs.split())
    wanted = [leaves[name] for name in needs.split()]
    grad_out = torch.randn(len(ids), 6, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    got = torch.autograd.grad(tk.l3_lookup_triton(q, ids_t, keys, values, offsets), wanted, grad_out)
    want = torch.autograd.grad(l3_lookup(q, ids_t, keys, values, offsets, "reference"), wanted, grad_out)
    for a, b in zip(got, want, strict=True):
        _assert_close(a, b, 2e-5)


def test_no_grad_forward_equals_the_autograd_forward_and_empty_input_is_empty():
    counts, ids = CASES["ragged"]
    args = _case(counts, ids, 6, 5, seed=2)
    with torch.no_grad():
        out = tk.l3_lookup_triton(*args)
    assert not out.requires_grad
    torch.testing.assert_close(out, tk.l3_lookup_triton(*args), rtol=0, atol=0)
    q, _, keys, values, offsets = args
    empty = tk.l3_lookup_triton(
        q[:0], torch.zeros(0, dtype=torch.int64, device=DEVICE), keys, values, offsets
    )
    assert empty.shape == (0, 5)


def test_registered_in_the_op_and_auto_picks_sorted_on_cpu(monkeypatch):
    counts, ids = CASES["ragged"]
    args = _case(counts, ids, 6, 5, seed=2)
    torch.testing.assert_close(l3_lookup(*args, impl="triton"), l3_lookup(*args, impl="reference"))
    assert resolve_impl("auto", torch.device("cpu")) == "sorted"
    from workloads.kernels.l3_lookup import op

    monkeypatch.setattr(op, "triton_available", lambda: True)
    assert resolve_impl("auto", torch.device("cuda")) == "triton"
    monkeypatch.setattr(op, "triton_available", lambda: False)
    assert resolve_impl("auto", torch.device("cuda")) == "sorted"
    assert resolve_impl("triton", torch.device("cpu")) == "triton"
    with pytest.raises(ValueError, match="unknown L3 lookup impl 'fast'"):
        resolve_impl("fast", torch.device("cpu"))


def _bad_inputs():
    counts, ids = CASES["ragged"]
    q, ids_t, keys, values, offsets = (t.detach() for t in _case(counts, ids, 6, 5, seed=0))
    yield "q", (q.t().contiguous().t(), ids_t, keys, values, offsets), "q must be contiguous"
    yield "q", (q.double(), ids_t, keys, values, offsets), "q has dtype torch.float64"
    yield "q", (q.to("meta"), ids_t, keys, values, offsets), "q is on meta"
    yield "token_ids", (q, ids_t[:-1], keys, values, offsets), "token_ids has 7 positions but q has 8"
    yield "token_ids", (q, ids_t.float(), keys, values, offsets), "token_ids has dtype torch.float32"
    yield "keys", (q, ids_t, keys[:, :5], values, offsets), "keys must be contiguous"
    yield "keys", (q, ids_t, keys[:, :5].contiguous(), values, offsets), "keys has width 5 but q has dim 6"
    yield "values", (q, ids_t, keys, values[:-1], offsets), "values has 17 rows but keys has 18"
    yield "values", (q, ids_t, keys, values[0], offsets), "values must be 2-D"
    yield "offsets", (q, ids_t, keys, values, offsets.int()), "offsets has dtype torch.int32"
    yield "offsets", (q, ids_t, keys, values, offsets[:1]), "offsets must hold vocab"


@pytest.mark.parametrize(
    "arg, inputs, message", list(_bad_inputs()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_launcher_names_the_bad_argument(arg, inputs, message):
    with pytest.raises(ValueError, match=message) as info:
        tk.l3_lookup_triton(*inputs)
    assert str(info.value).startswith(arg)


def test_double_backward_raises():
    counts, ids = CASES["ragged"]
    q, ids_t, keys, values, offsets = _case(counts, ids, 6, 5, seed=2)
    (gq,) = torch.autograd.grad(
        tk.l3_lookup_triton(q, ids_t, keys, values, offsets).sum(), [q], create_graph=True
    )
    with pytest.raises(RuntimeError):
        gq.sum().backward()
