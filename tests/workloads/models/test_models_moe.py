"""The DeepSpeed-MoE block on CPU (ep_size=1, no distributed setup)."""

from dataclasses import replace

import pytest
import torch

from workloads.models import presets
from workloads.models.config import MoEConfig
from workloads.models.moe import MoEMLP
from workloads.models.transformer import FeedForward, Transformer


def test_one_expert_top1_moe_equals_the_dense_mlp():
    dense_cfg = presets.get("debug")
    # One expert, top-1, capacity for every token (capacity = tokens / experts * factor): nothing dropped,
    # and the softmax over one expert is exactly 1, so the block must equal the dense MLP.
    moe = MoEConfig(
        positions=tuple(range(dense_cfg.n_layers)),
        num_experts=1,
        ffn_dim=dense_cfg.ffn_dim,
        top_k=1,
        capacity_factor=1.0,
        eval_capacity_factor=1.0,
        min_capacity=0,
    )
    moe_cfg = replace(dense_cfg, family="moe", moe=moe)
    torch.manual_seed(0)
    dense, sparse = Transformer(dense_cfg), Transformer(moe_cfg)
    state = {}
    for key, value in dense.state_dict().items():
        state[key.replace(".mlp.", ".mlp.moe.deepspeed_moe.experts.deepspeed_experts.0.")] = value
    missing, unexpected = sparse.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("gate.wg.weight") for key in missing)

    ids = torch.randint(0, dense_cfg.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    want, zero = dense(ids)
    got, aux, counts = sparse(ids, return_expert_counts=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert zero == 0 and aux > 0
    assert set(counts) == set(range(dense_cfg.n_layers))
    assert all(c.tolist() == [60] for c in counts.values())  # every token routed to the only expert

    want.sum().backward()
    got.sum().backward()
    expert = sparse.layers[1].mlp.experts[0]
    torch.testing.assert_close(
        expert.w2.weight.grad, dense.layers[1].mlp.w2.weight.grad, rtol=1e-5, atol=1e-6
    )


def make_block(**overrides) -> MoEMLP:
    cfg = MoEConfig(**{"positions": (0,), "num_experts": 4, "ffn_dim": 32, "top_k": 2, **overrides})
    torch.manual_seed(0)
    return MoEMLP(16, cfg, FeedForward(16, cfg.ffn_dim))


def test_block_returns_aux_loss_and_counts():
    block = make_block()
    x = torch.randn(2, 5, 16)
    out, l_aux, exp_counts = block(x)
    assert out.shape == x.shape and l_aux.shape == ()
    assert exp_counts.shape == (4,) and int(exp_counts.sum()) == 2 * 5 * 2  # tokens × top_k, pre-capacity
    # DeepSpeed deep-copies one expert; the block re-initialises each so they do not start identical.
    assert not torch.equal(block.experts[0].w1.weight, block.experts[1].w1.weight)
    assert block.gate.weight.shape == (4, 16)


def test_top1_with_fewer_tokens_than_min_capacity_is_an_error():
    block = make_block(top_k=1, min_capacity=4)
    with pytest.raises(ValueError, match=r"MoE got 3 tokens but moe.min_capacity=4"):
        block(torch.randn(1, 3, 16))


def test_aux_loss_is_scaled_by_the_coefficient():
    cfg = presets.get("debug", "moe")
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    moe = replace(cfg.moe, aux_loss_coef=1.0, top2_sampling=False, use_rts=False)  # no random routing
    model = Transformer(replace(cfg, moe=moe))
    _, raw = model(ids)
    model.config = replace(model.config, moe=replace(model.config.moe, aux_loss_coef=0.25))
    _, scaled = model(ids)
    assert raw > 0
    torch.testing.assert_close(scaled, 0.25 * raw)
