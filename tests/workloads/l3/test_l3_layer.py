"""L3Layer: sorted == reference (outputs and every gradient), closed forms, init, and input errors."""

import numpy as np
import pytest
import torch

from workloads.l3.layer import L3Layer


def _pair(counts, dim, d_emb, d_up, *, tied, residual, seed):
    """Two layers with identical weights, one per impl; mix randomized so every block gets gradient."""
    torch.manual_seed(seed)
    ref = L3Layer(dim, counts, d_emb, d_up, tied=tied, residual=residual, impl="reference").double()
    with torch.no_grad():
        ref.mix.weight.normal_(std=0.3)
        ref.norm_in.weight.uniform_(0.5, 1.5)
        ref.norm_out.weight.uniform_(0.5, 1.5)
        ref.keys.mul_(20)  # peaky softmax: a uniform one would hide a wrong row-to-token mapping
    fast = L3Layer(dim, counts, d_emb, d_up, tied=tied, residual=residual, impl="sorted").double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _fwd_bwd(layer, x, ids, grad_out):
    x = x.clone().requires_grad_()
    out = layer(x, ids)
    out.backward(grad_out)
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


SHAPES = [
    # (counts, B, T, dim, d_emb, d_up)
    ([3, 1, 7, 2, 5], 2, 5, 8, 4, 6),
    ([1, 1, 1], 1, 1, 4, 4, 3),  # a batch of one token
    ([1, 512, 2, 1], 2, 7, 6, 3, 5),  # a token owning `cap` rows next to 1-row tokens
    ([4], 3, 4, 4, 4, 2),  # one token: every position repeats it
]


@pytest.mark.parametrize("residual", [False, True], ids=["replace", "residual"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_sorted_equals_reference_outputs_and_grads(shape, tied, residual):
    counts, B, T, dim, d_emb, d_up = SHAPES[shape]
    d_emb = dim if tied else d_emb
    ref, fast = _pair(counts, dim, d_emb, d_up, tied=tied, residual=residual, seed=shape)
    g = torch.Generator().manual_seed(shape)
    x = torch.randn(B, T, dim, generator=g, dtype=torch.float64)
    ids = torch.randint(0, len(counts), (B, T), generator=g)
    grad_out = torch.randn(B, T, dim, generator=g, dtype=torch.float64)
    out_r, gx_r, grads_r = _fwd_bwd(ref, x, ids, grad_out)
    out_f, gx_f, grads_f = _fwd_bwd(fast, x, ids, grad_out)
    torch.testing.assert_close(out_f, out_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-10, atol=1e-12)
    expected = {"keys", "up.weight", "mix.weight", "norm_in.weight", "norm_out.weight"}
    assert set(grads_r) == expected | (set() if tied else {"values"})
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("seed", range(6))
def test_sorted_equals_reference_float32_random_ragged(seed):
    """float32 at ~1e-5 relative on random ragged allocations with Zipf-distributed, repeated ids."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(torch.randint(2, 60, (1,), generator=g))
    counts = torch.randint(1, 40, (vocab,), generator=g)
    counts[int(torch.randint(0, vocab, (1,), generator=g))] = 1
    B, T = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g))
    ids = torch.multinomial(1.0 / torch.arange(1.0, vocab + 1), B * T, replacement=True, generator=g)
    torch.manual_seed(seed)
    ref = L3Layer(16, counts, 8, 12, tied=False, residual=bool(seed % 2), impl="reference")
    with torch.no_grad():
        ref.mix.weight.normal_(std=0.3)
    fast = L3Layer(16, counts, 8, 12, tied=False, residual=bool(seed % 2), impl="sorted")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, 16, generator=g)
    grad_out = torch.randn(B, T, 16, generator=g)
    out_r, gx_r, grads_r = _fwd_bwd(ref, x, ids.view(B, T), grad_out)
    out_f, gx_f, grads_f = _fwd_bwd(fast, x, ids.view(B, T), grad_out)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-5, atol=1e-5)
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("impl", ["reference", "sorted"])
def test_one_row_per_token_reduces_to_closed_form(impl):
    """With d_t = 1 the softmax is 1: L3(x, t) = mix(cat(norm_out(up(V_t)), x))."""
    torch.manual_seed(0)
    layer = L3Layer(8, [1] * 11, 5, 7, impl=impl).double()
    with torch.no_grad():
        layer.mix.weight.normal_()
        layer.norm_out.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    ids = torch.randint(0, 11, (3, 4))
    v_t = layer.values[ids]  # (3, 4, d_emb): row t of a one-row-per-token table is token t's row
    expected = layer.mix(torch.cat([layer.norm_out(layer.up(v_t)), x], dim=-1))
    torch.testing.assert_close(layer(x, ids), expected)


def test_uniform_softmax_closed_form_mean_of_rows():
    """Zero keys give equal scores: the lookup is the mean of the token's value rows."""
    layer = L3Layer(4, [2, 3], 2, 3).double()
    with torch.no_grad():
        layer.keys.zero_()
    x = torch.randn(1, 2, 4, dtype=torch.float64)
    ids = torch.tensor([[1, 0]])
    means = torch.stack([layer.values[2:5].mean(0), layer.values[0:2].mean(0)])[None]
    expected = layer.mix(torch.cat([layer.norm_out(layer.up(means)), x], dim=-1))
    torch.testing.assert_close(layer(x, ids), expected)


def test_init_replace_form_is_near_identity_and_residual_form_is_exact_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 64)
    ids = torch.randint(0, 100, (2, 16))
    for d_up in (128, 4096):  # the lookup block is N(0, 0.02² / d_up): its contribution ~0.02 RMS
        replace = L3Layer(64, [4] * 100, 32, d_up)
        rel = (replace(x, ids) - x).norm() / x.norm()
        assert 0.005 < rel < 0.05, (d_up, rel)
        torch.testing.assert_close(replace.mix.weight[:, d_up:], torch.eye(64))
    residual = L3Layer(64, [4] * 100, 32, 128, residual=True)
    torch.testing.assert_close(residual(x, ids), x)
    assert float(residual.keys.detach().std()) == pytest.approx(0.02, rel=0.1)


def test_parameter_names_shapes_and_offsets_buffer():
    layer = L3Layer(6, np.array([2, 1, 3]), 4, 5)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {
        "keys": (6, 6),
        "values": (6, 4),
        "up.weight": (5, 4),
        "mix.weight": (6, 11),
        "norm_in.weight": (6,),
        "norm_out.weight": (5,),
    }
    assert layer.offsets.tolist() == [0, 2, 3, 6] and layer.offsets.dtype == torch.int64
    assert "offsets" in dict(layer.named_buffers())
    assert layer.counts().tolist() == [2, 1, 3]
    tied = L3Layer(6, [2, 1, 3], 6, 5, tied=True)
    assert "values" not in dict(tied.named_parameters()) and tied.value_table is tied.keys


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dim=4, counts=[1, 2], d_emb=3, d_up=2, tied=True), "d_emb must equal dim"),
        (dict(dim=4, counts=[1, 0, 2], d_emb=3, d_up=2), r"counts\[1\] = 0"),
        (dict(dim=4, counts=[], d_emb=3, d_up=2), "non-empty"),
        (dict(dim=4, counts=[1.5, 2.0], d_emb=3, d_up=2), "must be integers"),
        (dict(dim=0, counts=[1], d_emb=3, d_up=2), "dim must be a positive int"),
        (dict(dim=4, counts=[1], d_emb=3, d_up=2, impl="fast"), "impl must be one of"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L3Layer(**kwargs)


@pytest.mark.parametrize(
    ("x_shape", "ids", "message"),
    [
        ((1, 2, 4), torch.tensor([[0, 3]]), "token id 3 is outside the L3 vocabulary"),
        ((1, 2, 4), torch.tensor([[-1, 0]]), "token id -1 is outside"),
        ((1, 2, 5), torch.tensor([[0, 1]]), r"x must have shape \(B, T, 4\)"),
        ((2, 4), torch.tensor([[0, 1]]), r"x must have shape"),
        ((1, 2, 4), torch.tensor([[0, 1, 1]]), "token_ids must have shape"),
        ((1, 2, 4), torch.tensor([[0.0, 1.0]]), "integer tensor"),
        ((1, 2, 4), torch.tensor([[False, True]]), r"integer tensor \(int64, .*got dtype torch.bool"),
        ((1, 2, 4), torch.tensor([[0, 9]], dtype=torch.int8), "token id 9 is outside"),
    ],
)
def test_forward_errors(x_shape, ids, message):
    layer = L3Layer(4, [1, 2, 1], 3, 2)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(x_shape), ids)


def test_integer_x_is_rejected():
    layer = L3Layer(4, [1, 2, 1], 3, 2)
    with pytest.raises(ValueError, match="x must be floating point"):
        layer(torch.ones(1, 2, 4, dtype=torch.long), torch.tensor([[0, 1]]))


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch rms_norm, autocast
def test_x_dtype_must_match_parameters_outside_autocast():
    layer = L3Layer(4, [1, 2, 1], 3, 2)
    x, ids = torch.randn(1, 2, 4, dtype=torch.float64), torch.tensor([[0, 1]], dtype=torch.int8)
    with pytest.raises(
        ValueError, match="x has dtype torch.float64 but the layer's parameters are torch.float32"
    ):
        layer(x, ids)
    # Under autocast the mismatch is autocast's to resolve: bf16 activations, fp32 parameters.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.to(torch.bfloat16), ids)
    assert out.shape == (1, 2, 4) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer(x.float(), ids), atol=0.05, rtol=0.05)


def test_keys_gradient_is_exact_segment_sum():
    """A token's row gradient sums over all its occurrences; rows of absent tokens get exactly zero."""
    layer = L3Layer(4, [2, 3, 2], 3, 2, impl="sorted").double()
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    ids = torch.tensor([[1, 1, 0, 1, 0]])
    layer(x, ids).sum().backward()
    assert torch.all(layer.keys.grad[5:7] == 0) and torch.all(layer.values.grad[5:7] == 0)
    assert layer.keys.grad[0:5].abs().sum() > 0
    g_split = layer.values.grad.clone()
    layer.zero_grad()
    for t in range(5):  # one position at a time: gradients add up to the batched one
        layer(x[:, t : t + 1], ids[:, t : t + 1]).sum().backward()
    torch.testing.assert_close(layer.values.grad, g_split)
