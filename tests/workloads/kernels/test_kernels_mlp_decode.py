"""The fused decode MLP kernels (mlp_decode.cpu, serial and parallel builds) against their spec
(mlp_decode.reference) on ragged position counts, odd widths, aliased expert slots and ties; the spec
against the models' own MLP and dropless MoE; hand-worked routes and weights; when a call takes the kernel."""

import math

import numpy as np
import pytest
import torch

from workloads.kernels.mlp_decode import cpu, reference
from workloads.models.moe_dropless import dropless_reference
from workloads.models.transformer import FeedForward

pytestmark = pytest.mark.skipif(cpu.numba is None, reason="numba is not installed")

POSITIONS = [1, 2, 3, 4, 5, 7, 8, 9]  # below, at and past one and two quads of positions


def _norm(dim: int, g: torch.Generator) -> torch.nn.RMSNorm:
    norm = torch.nn.RMSNorm(dim, eps=1e-5)
    norm.weight.data = torch.rand(dim, generator=g) + 0.5
    return norm


def _call(kind: str, h: torch.Tensor, tables: tuple, parallel: bool) -> torch.Tensor:
    """The kernel itself on (N, dim) h, serial or parallel, whatever torch's thread count."""
    out = np.empty_like(h.numpy())
    (cpu._dense if kind == "dense" else cpu._moe)(h.numpy(), *tables[1:], parallel, out)
    return torch.from_numpy(out)


# Serving runs float32; float64 (the kernels build for either) shows a wrong term far below float32's noise.
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", POSITIONS)
@pytest.mark.parametrize(("dim", "ffn"), [(13, 7), (64, 96)])
def test_dense_equals_the_reference(dtype, parallel, n, dim, ffn):
    g = torch.Generator().manual_seed(n * 31 + dim)
    norm = _norm(dim, g).to(dtype)
    w1, w3, w2 = (w.to(dtype) / 4 for w in _experts(1, dim, ffn, g))
    w1, w3, w2 = w1[0], w3[0], w2[0]
    h = 3 * torch.randn(n, dim, generator=g, dtype=dtype)
    got = _call("dense", h, cpu.dense_tables(norm, w1, w3, w2), parallel)
    want = reference.dense(h, norm.weight, 1e-5, w1, w3, w2)
    torch.testing.assert_close(got, want, **TOLERANCE[dtype])


def _experts(num: int, dim: int, ffn: int, g: torch.Generator):
    return tuple(torch.randn(num, *shape, generator=g) / 4 for shape in ((ffn, dim), (ffn, dim), (dim, ffn)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", POSITIONS)
@pytest.mark.parametrize(("num_experts", "top_k"), [(1, 1), (3, 1), (3, 2), (6, 1), (6, 2), (6, 3), (4, 4)])
def test_moe_equals_the_reference(dtype, parallel, n, num_experts, top_k):
    dim, ffn = 24, 40
    g = torch.Generator().manual_seed(n * 97 + num_experts * 7 + top_k)
    norm, gate = _norm(dim, g), 2 * torch.randn(num_experts, dim, generator=g)  # distinct, confident routes
    w1, w3, w2 = (w.to(dtype) for w in _experts(num_experts, dim, ffn, g))
    norm, gate = norm.to(dtype), gate.to(dtype)
    h = torch.randn(n, dim, generator=g, dtype=dtype)
    slots = torch.arange(num_experts)
    got = _call("moe", h, cpu.moe_tables(norm, gate, slots, w1, w3, w2, top_k), parallel)
    want = reference.moe(h, norm.weight, 1e-5, gate, w1, w3, w2, top_k)
    torch.testing.assert_close(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("parallel", [False, True])
def test_moe_aliased_slots_run_their_distinct_weights(parallel):
    # Five expert slots over two distinct weight sets (the bench's moe-1x control aliases all to one).
    dim, ffn, n = 16, 12, 8
    g = torch.Generator().manual_seed(5)
    norm, gate = _norm(dim, g), 2 * torch.randn(5, dim, generator=g)
    distinct = _experts(2, dim, ffn, g)
    slots = torch.tensor([1, 0, 0, 1, 0])
    h = torch.randn(n, dim, generator=g)
    got = _call("moe", h, cpu.moe_tables(norm, gate, slots, *distinct, 2), parallel)
    per_slot = [w[slots] for w in distinct]  # (5, …): each slot's weights written out
    torch.testing.assert_close(
        got, reference.moe(h, norm.weight, 1e-5, gate, *per_slot, 2), rtol=1e-5, atol=1e-5
    )


def _unit_norm() -> torch.nn.RMSNorm:
    norm = torch.nn.RMSNorm(1, eps=0.0)
    norm.weight.data.fill_(1.0)
    return norm


def _silu(a: float) -> float:
    return a / (1 + math.exp(-a))


@pytest.mark.parametrize("parallel", [False, True])
def test_hand_worked_routes_and_weights(parallel):
    # dim 1, h = 2: RMSNorm gives x = 1. Logits (ln 3, 0) give probabilities (3/4, 1/4). Expert e is
    # ffn 1 with w1 = a_e, w3 = b_e, w2 = c_e, so its output is c_e · silu(a_e) · b_e.
    norm, gate = _unit_norm(), torch.tensor([[math.log(3.0)], [0.0]])
    a, b, c = (1.0, 2.0), (1.0, 3.0), (1.0, -1.0)
    w1, w3, w2 = (torch.tensor(v).reshape(2, 1, 1) for v in (a, b, c))
    expert = [c[e] * _silu(a[e]) * b[e] for e in range(2)]
    h = torch.tensor([[2.0]])
    top1 = _call("moe", h, cpu.moe_tables(norm, gate, torch.arange(2), w1, w3, w2, 1), parallel)
    assert top1.item() == pytest.approx(2 + 0.75 * expert[0], rel=1e-6)
    top2 = _call("moe", h, cpu.moe_tables(norm, gate, torch.arange(2), w1, w3, w2, 2), parallel)
    assert top2.item() == pytest.approx(2 + 0.75 * expert[0] + 0.25 * expert[1], rel=1e-6)
    dense = _call("dense", h, cpu.dense_tables(norm, w1[1], w3[1], w2[1]), parallel)
    assert dense.item() == pytest.approx(2 + expert[1], rel=1e-6)


@pytest.mark.parametrize("parallel", [False, True])
def test_tied_logits_route_to_the_first_expert(parallel):
    # Experts 1 and 2 tie for the top logit: top-1 takes expert 1 (as torch's max and the host router),
    # weighted by its probability e / (1 + 2e); top-2 takes both, half each.
    norm, gate = _unit_norm(), torch.tensor([[0.0], [1.0], [1.0]])
    w1 = w3 = torch.ones(3, 1, 1)
    w2 = torch.tensor([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    h = torch.tensor([[5.0]])  # x = 1
    silu1 = _silu(1.0)
    top1 = _call("moe", h, cpu.moe_tables(norm, gate, torch.arange(3), w1, w3, w2, 1), parallel)
    assert top1.item() == pytest.approx(5 + math.e / (1 + 2 * math.e) * 10 * silu1, rel=1e-6)
    top2 = _call("moe", h, cpu.moe_tables(norm, gate, torch.arange(3), w1, w3, w2, 2), parallel)
    assert top2.item() == pytest.approx(5 + 0.5 * (10 + 100) * silu1, rel=1e-6)


@pytest.mark.parametrize("top_k", [1, 2])
def test_reference_equals_the_models_mlp_and_dropless_moe(top_k):
    g = torch.Generator().manual_seed(top_k)
    dim, ffn, n = 16, 24, 6
    norm = _norm(dim, g)
    h = torch.randn(n, dim, generator=g)
    torch.manual_seed(0)
    experts = [FeedForward(dim, ffn) for _ in range(3)]
    with torch.no_grad():
        x = norm(h)
        mlp = experts[0]
        want = h + mlp(x)
        got = reference.dense(h, norm.weight, norm.eps, mlp.w1.weight, mlp.w3.weight, mlp.w2.weight)
        torch.testing.assert_close(got, want)
        gate = 2 * torch.randn(3, dim, generator=g)
        stacked = [torch.stack([getattr(e, w).weight for e in experts]) for w in ("w1", "w3", "w2")]
        got = reference.moe(h, norm.weight, norm.eps, gate, *stacked, top_k)
        torch.testing.assert_close(got, h + dropless_reference(x, gate, experts, top_k), rtol=1e-5, atol=1e-6)


def test_run_keeps_the_shape_and_takes_any_leading_dims():
    g = torch.Generator().manual_seed(0)
    norm = _norm(8, g)
    w1, w3, w2 = (
        torch.randn(5, 8, generator=g),
        torch.randn(5, 8, generator=g),
        torch.randn(8, 5, generator=g),
    )
    h = torch.randn(2, 3, 8, generator=g)
    got = cpu.run(h, cpu.dense_tables(norm, w1, w3, w2))
    assert got.shape == (2, 3, 8)
    torch.testing.assert_close(
        got.reshape(6, 8), reference.dense(h.reshape(6, 8), norm.weight, 1e-5, w1, w3, w2)
    )


def test_which_calls_take_the_kernel():
    dense, moe = ("dense",), ("moe",)
    h1, h2, h3, h9 = torch.zeros(1, 1, 4), torch.zeros(2, 1, 4), torch.zeros(3, 1, 4), torch.zeros(1, 9, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            assert cpu.runs(h1, dense) and not cpu.runs(h2, dense)  # several threads: dense at 1 position
            assert cpu.runs(h3, moe) and not cpu.runs(h9, moe)  # a MoE up to MAX_POSITIONS
            assert not cpu.runs(h1.double(), moe)  # float32 only
        assert not cpu.runs(h1, moe)  # grad mode keeps autograd's path
        torch.set_num_threads(1)
        with torch.no_grad():
            assert cpu.runs(h3, dense) and cpu.runs(torch.zeros(2, 4, 4), dense)
            assert not cpu.runs(h9, dense)
    finally:
        torch.set_num_threads(threads)


def test_available_needs_contiguous_float32_cpu_weights():
    w = torch.zeros(4, 6)
    assert cpu.available(w, w[:, :3].contiguous())
    assert not cpu.available(w, w[:, :3])  # a strided view
    assert not cpu.available(w.double())
    assert not cpu.available(w.bfloat16())
