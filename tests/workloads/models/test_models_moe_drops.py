"""Dropped tokens vs dropped routes of the DeepSpeed gate, hand-counted (`moe.route_drops`, MoEMLP)."""

import torch

from workloads.models.config import MoEConfig
from workloads.models.moe import MoEMLP, route_drops
from workloads.models.transformer import FeedForward


def test_route_drops_hand_counted_sparse_routes():
    """top-2 over 4 tokens; -1 marks an evicted route. Token 2 lost both routes (a dropped token); tokens
    1 and 2 lost 3 routes in all. Expert 0 is a kept route (index 0 is not "dropped")."""
    idx = torch.tensor([[0, 3, -1, 1], [2, -1, -1, 0]], dtype=torch.int32)  # (k, S)
    assert route_drops((None, None, None, idx, None, None, None), top_k=2).tolist() == [1, 3]
    kept = torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)
    assert route_drops((None, None, None, kept, None, None, None), top_k=2).tolist() == [0, 0]


def test_route_drops_hand_counted_dispatch_mask():
    """The dense form: (S, E, C) dispatch mask. top-2, 3 tokens: token 0 kept both, token 1 kept one,
    token 2 none → 1 dropped token, 3 dropped routes."""
    mask = torch.zeros(3, 3, 2, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 2, 0] = True
    mask[1, 1, 0] = True
    assert route_drops((None, None, mask, None), top_k=2).tolist() == [1, 3]


def test_moe_layer_records_the_gates_drops():
    """top-1, 2 experts, every token routed to expert 0 (the gate sees only x[..., 0] > 0): 8 tokens,
    capacity ceil(8 / 2 · 1.0) = 4, so 4 tokens (= 4 routes) are dropped."""
    cfg = MoEConfig(
        positions=(0,), num_experts=2, ffn_dim=8, top_k=1, capacity_factor=1.0, eval_capacity_factor=1.0,
        min_capacity=0, use_rts=False,
    )  # fmt: skip
    torch.manual_seed(0)
    layer = MoEMLP(4, cfg, FeedForward(4, 8))
    with torch.no_grad():
        layer.gate.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
    x = torch.rand(2, 4, 4) + torch.tensor([1.0, 0, 0, 0])  # x[..., 0] > 0 everywhere
    _, _, counts = layer(x)
    assert counts.tolist() == [8, 0]  # pre-capacity routes
    assert layer.last_dropped.tolist() == [4, 4]
