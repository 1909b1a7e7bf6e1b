"""The dropless MoE serving path (workloads.models.moe_dropless) against DeepSpeed's layer and the spec."""

import math
from dataclasses import replace

import pytest
import torch

from workloads.models import presets
from workloads.models.config import MoEConfig
from workloads.models.moe import MoEMLP, serve_dropless
from workloads.models.moe_dropless import (
    HOST_GROUPING_MAX_ROUTES,
    dropless_host,
    dropless_one_token,
    dropless_reference,
    dropless_sorted,
    route,
)
from workloads.models.transformer import FeedForward, Transformer

# DeepSpeed drops nothing: drop_tokens=False sizes the capacity to the busiest expert; no random token
# selection, no sampled second expert, no minimum capacity.
NO_DROPS = {"drop_tokens": False, "use_rts": False, "top2_sampling": False, "min_capacity": 0}


def make(dim=16, num_experts=4, top_k=1, seed=0, **kw) -> MoEMLP:
    cfg = MoEConfig(positions=(0,), num_experts=num_experts, ffn_dim=24, top_k=top_k, **(NO_DROPS | kw))
    torch.manual_seed(seed)
    layer = MoEMLP(dim, cfg, FeedForward(dim, cfg.ffn_dim)).eval()
    with torch.no_grad():
        layer.gate.weight.normal_(0, 1.0)  # distinct, confident routes (the default init is near-uniform)
    return layer


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize(("B", "T"), [(1, 1), (1, 2), (2, 3), (1, 8), (3, 7), (4, 33)])
@pytest.mark.parametrize("num_experts", [2, 5])
def test_dropless_equals_deepspeed_when_deepspeed_drops_nothing(top_k, B, T, num_experts):
    layer = make(num_experts=num_experts, top_k=top_k, seed=B * 100 + T)
    x = torch.randn(B, T, 16, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        want, want_aux, want_counts = layer(x)
        assert layer.last_dropped.tolist() == [0, 0]  # DeepSpeed kept every route
        layer.set_impl("dropless")
        served, no_aux, no_counts = layer(x)  # serving: a few tokens are routed on the host
        layer.record_balance = True
        got, aux, counts = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux, want_aux, rtol=1e-6, atol=1e-7)
    assert counts.tolist() == want_counts.tolist()
    assert layer.last_dropped.tolist() == [0, 0]
    torch.testing.assert_close(served, want, rtol=1e-5, atol=1e-6)
    if B * T * top_k <= HOST_GROUPING_MAX_ROUTES:
        assert no_aux is None and no_counts is None


def test_dropless_equals_deepspeed_with_drop_tokens_and_room_for_every_token():
    # drop_tokens=True but capacity = factor · tokens / experts ≥ every expert's load: nothing dropped.
    layer = make(num_experts=4, top_k=2, drop_tokens=True, capacity_factor=4.0, eval_capacity_factor=4.0)
    x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _, _ = layer(x)
        assert layer.last_dropped.tolist() == [0, 0]
        layer.set_impl("dropless")
        got, aux, counts = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert aux is None and int(counts.sum()) == 2 * 9 * 2  # the sorted path always counts


def _experts(num_experts: int, dim: int = 8, seed: int = 0) -> list[FeedForward]:
    torch.manual_seed(seed)
    return [FeedForward(dim, 12) for _ in range(num_experts)]


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 5, HOST_GROUPING_MAX_ROUTES // 2, HOST_GROUPING_MAX_ROUTES + 1, 97])
def test_sorted_equals_the_reference_on_ragged_sizes(top_k, n):
    experts, gen = _experts(6), torch.Generator().manual_seed(n)
    gate, x = torch.randn(6, 8, generator=gen), torch.randn(n, 8, generator=gen)
    residual = torch.randn(n, 8, generator=gen)
    kept = residual.clone()
    with torch.no_grad():
        got, counts = dropless_sorted(x, gate, experts, top_k)
        on_host = dropless_host(x, gate, experts, top_k)
        with_residual = dropless_host(x.view(1, n, 8), gate, experts, top_k, residual.view(1, n, 8))
        want = dropless_reference(x, gate, experts, top_k)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(on_host, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_residual, (kept + want).view(1, n, 8), rtol=1e-5, atol=1e-6)
    assert torch.equal(residual, kept)
    _, chosen = route(x, gate, top_k)
    assert counts.tolist() == torch.bincount(chosen.reshape(-1), minlength=6).tolist()


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("shape", "num_experts"), [((1, 1, 8), 6), ((1, 8), 6), ((1, 1, 1, 8), 3), ((8,), 1)]
)
def test_one_token_routed_on_the_host_equals_the_reference(top_k, seed, shape, num_experts):
    top_k = min(top_k, num_experts)
    experts, gen = _experts(num_experts, seed=seed), torch.Generator().manual_seed(seed)
    gate, x = torch.randn(num_experts, 8, generator=gen), torch.randn(*shape, generator=gen)
    residual = torch.randn(*shape, generator=gen)
    kept = residual.clone()
    with torch.no_grad():
        got = dropless_one_token(x, gate, experts, top_k)
        with_residual = dropless_one_token(x, gate, experts, top_k, residual)
        want = dropless_reference(x.view(1, 8), gate, experts, top_k).view(shape)
    assert got.shape == shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_residual, kept + want, rtol=1e-5, atol=1e-6)
    assert torch.equal(residual, kept)  # the weights ride on a new add; the caller's stream is untouched


@pytest.mark.parametrize("top_k", [1, 2])
def test_one_token_at_tinys_shape_and_in_bfloat16_equals_the_reference(top_k):
    # tiny's MoE: dim 256, 9 experts of 688; bfloat16 routes from float32 logits as DeepSpeed's gate does
    torch.manual_seed(3)
    experts = [FeedForward(256, 688).eval() for _ in range(9)]
    gate = torch.randn(9, 256)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        exp = [FeedForward(256, 688).to(dtype).eval() for _ in range(9)]
        for e, src in zip(exp, experts, strict=True):
            e.load_state_dict({k: v.to(dtype) for k, v in src.state_dict().items()})
        for seed in range(3):
            x = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(seed)).to(dtype)
            with torch.no_grad():
                got = dropless_one_token(x, gate.to(dtype), exp, top_k)
                want = dropless_reference(x.view(1, 256), gate.to(dtype), exp, top_k).view(1, 1, 256)
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=tol, atol=tol * 1e-2)
            few = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(seed)).to(dtype)  # bs 2
            with torch.no_grad():
                got = dropless_host(few, gate.to(dtype), exp, top_k)
                want = dropless_reference(few.view(6, 256), gate.to(dtype), exp, top_k).view(2, 3, 256)
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("top_k", [1, 2])
def test_batch_one_decode_through_the_layer_equals_deepspeed(top_k):
    layer = make(num_experts=5, top_k=top_k, seed=7)
    with torch.no_grad():
        for seed in range(5):
            x = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(seed))
            residual = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(seed + 10))
            layer.set_impl("deepspeed")
            want = layer(x)[0]
            torch.testing.assert_close(layer(x, residual=residual)[0], residual + want, rtol=0, atol=0)
            layer.set_impl("dropless")
            got, aux, counts = layer(x)  # not recording: the one-token host path, nothing else returned
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            assert aux is None and counts is None
            torch.testing.assert_close(layer(x, residual=residual)[0], residual + want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [3, 40])
def test_empty_experts_and_one_busy_expert(n):
    experts = _experts(4)
    gate = torch.zeros(4, 8)
    gate[2, 0] = 50.0  # every token (x[:, 0] > 0) goes to expert 2; experts 0, 1, 3 get nothing
    x = torch.rand(n, 8) + 0.5
    with torch.no_grad():
        got, counts = dropless_sorted(x, gate, experts, 1)
        on_host = dropless_host(x, gate, experts, 1)
        want = experts[2](x) * route(x, gate, 1)[0]
    assert counts.tolist() == [0, 0, n, 0]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(on_host, want, rtol=1e-6, atol=1e-7)


def test_combine_weights_hand_worked():
    # Two experts, logits (log 3, 0): probabilities 3/4 and 1/4. Top-1 weighs expert 0 by 3/4 (DeepSpeed's
    # top-1 does not renormalize); top-2 renormalizes over both: 3/4 and 1/4 again, summing to 1.
    gate = torch.tensor([[math.log(3.0)], [0.0]])
    x = torch.ones(1, 1)
    w1, e1 = route(x, gate, 1)
    w2, e2 = route(x, gate, 2)
    assert e1.tolist() == [[0]] and w1.tolist() == [[pytest.approx(0.75)]]
    assert e2.tolist() == [[0, 1]] and w2.tolist() == [[pytest.approx(0.75), pytest.approx(0.25)]]
    g3 = torch.tensor([[math.log(4.0)], [math.log(2.0)], [0.0]])  # p = 4/7, 2/7, 1/7; top-2 -> 2/3, 1/3
    assert route(x, g3, 2)[0].tolist() == [[pytest.approx(2 / 3), pytest.approx(1 / 3)]]
    experts = [lambda t: t * 10.0, lambda t: t * 100.0]
    out, _ = dropless_sorted(x, gate, experts, 2)
    assert out.item() == pytest.approx(0.75 * 10 + 0.25 * 100)


def test_served_transformer_equals_deepspeed_and_switches_every_block():
    base = presets.get("debug")
    moe = MoEConfig(positions=tuple(range(base.n_layers)), num_experts=3, ffn_dim=40, top_k=2, **NO_DROPS)
    model = Transformer(replace(base, family="moe", moe=moe)).eval()
    ids = torch.randint(0, base.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, _ = model(ids)
        serve_dropless(model)
        assert {b.mlp.impl for b in model.layers} == {"dropless"}
        got, aux, counts = model(ids, return_expert_counts=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert aux == 0  # not recording balance: no aux loss computed while serving
    assert sorted(counts) == list(range(base.n_layers)) and all(int(c.sum()) == 44 for c in counts.values())
    with torch.no_grad():  # one token: the host-grouped path counts only when recording
        assert model(ids[:1, :1], return_expert_counts=True)[2] == {}
        for block in model.layers:
            block.mlp.record_balance = True
        one = model(ids[:1, :1], return_expert_counts=True)[2]
    assert sorted(one) == list(range(base.n_layers)) and all(int(c.sum()) == 2 for c in one.values())


@pytest.mark.parametrize("top_k", [1, 2])
def test_served_decode_with_a_kv_cache_equals_deepspeed_step_by_step(top_k):
    # Batch 1 (blocks go straight to the host router) and batch 3 (the host-grouped path), every step.
    base = presets.get("debug")
    moe = MoEConfig(positions=(0, 1), num_experts=4, ffn_dim=40, top_k=top_k, **NO_DROPS)
    model = Transformer(replace(base, family="moe", moe=moe)).eval()
    for batch in (1, 3):
        ids = torch.randint(0, base.vocab_size, (batch, 9), generator=torch.Generator().manual_seed(batch))
        logits = {}
        for impl in ("deepspeed", "dropless"):
            serve_dropless(model, impl)
            cache, steps = model.new_cache(batch, 9), []
            with torch.no_grad():
                for t in range(9):
                    steps.append(model(ids[:, t : t + 1], cache, start_pos=t)[0])
            logits[impl] = torch.cat(steps, dim=1)
        torch.testing.assert_close(logits["dropless"], logits["deepspeed"], rtol=1e-5, atol=1e-5)
    assert [b.mlp.one_token is not None for b in model.layers[:2]] == [True, True]
    model.layers[0].mlp.record_balance = True  # recording goes through the module, which counts
    assert model.layers[0].mlp.one_token is None and model.layers[1].mlp.one_token is not None


def test_impl_errors_name_the_value():
    layer = make()
    with pytest.raises(ValueError, match="'deepspeed' or 'dropless', got 'fast'"):
        layer.set_impl("fast")
    layer.config = replace(layer.config, ep_size=2, num_experts=4)
    with pytest.raises(ValueError, match="moe.ep_size=2"):
        layer.set_impl("dropless")
