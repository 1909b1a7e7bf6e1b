"""The hash-routed MoE (family hash_moe): closed forms against the dense MLP and a per-token reference."""

from dataclasses import replace

import pytest
import torch

from workloads.models import presets
from workloads.models.accounting import count_params, mlp_params
from workloads.models.config import MoEConfig
from workloads.models.hash_moe import HashMoEMLP, expert_hash
from workloads.models.transformer import FeedForward, Transformer


def _hash_cfg(dense_cfg, **moe):
    fields = {"positions": tuple(range(dense_cfg.n_layers)), "num_experts": 1, "ffn_dim": dense_cfg.ffn_dim}
    return replace(dense_cfg, family="hash_moe", moe=MoEConfig(**(fields | moe)))


def test_one_expert_hash_moe_equals_the_dense_mlp_with_copied_weights():
    dense_cfg = presets.get("debug")
    torch.manual_seed(0)
    dense, hashed = Transformer(dense_cfg), Transformer(_hash_cfg(dense_cfg))
    state = {k.replace(".mlp.", ".mlp.experts.0."): v for k, v in dense.state_dict().items()}
    missing, unexpected = hashed.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(".mlp.hash") for k in missing)  # no router to load
    ids = torch.randint(0, dense_cfg.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    want, _ = dense(ids)
    got, aux, counts = hashed(ids, return_expert_counts=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert aux == 0  # no aux loss
    assert all(c.tolist() == [60] for c in counts.values())
    assert count_params(_hash_cfg(dense_cfg)).total == count_params(dense_cfg).total  # and no router params
    assert sum(p.numel() for p in hashed.parameters()) == count_params(_hash_cfg(dense_cfg)).total


@pytest.mark.parametrize(("vocab", "experts", "k"), [(512, 8, 1), (1000, 7, 2), (5, 8, 3), (97, 1, 1)])
def test_hash_is_fixed_and_balanced_on_the_vocab(vocab, experts, k):
    h = expert_hash(vocab, experts, k)
    assert h.shape == (k, vocab) and torch.equal(h, expert_hash(vocab, experts, k))  # fixed
    for j in range(k):
        load = torch.bincount(h[j], minlength=experts)
        assert int(load.max()) - int(load.min()) <= 1 and int(load.sum()) == vocab  # floor/ceil(V / E)
    if k > 1 and experts > 1 and vocab > 100:
        assert not torch.equal(h[0], h[1])  # independent hashes
        agree = (h[0] == h[1]).float().mean().item()
        assert abs(agree - 1 / experts) < 0.05  # independent: agree with probability 1 / E


def test_forward_equals_the_per_token_reference_and_nothing_drops():
    torch.manual_seed(0)
    cfg = MoEConfig(positions=(0,), num_experts=4, ffn_dim=24, top_k=2)
    block = HashMoEMLP(16, cfg, FeedForward(16, cfg.ffn_dim), vocab_size=50)
    x, ids = torch.randn(3, 7, 16), torch.randint(0, 50, (3, 7))
    out, aux, counts = block(x, ids)
    want = torch.stack([
        sum(block.experts[int(block.hash[j, t])](v) for j in range(2)) / 2
        for v, t in zip(x.reshape(-1, 16), ids.reshape(-1), strict=True)
    ]).view_as(x)  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert aux is None and int(counts.sum()) == 2 * 21 and block.last_dropped.tolist() == [0, 0]
    assert counts.tolist() == torch.bincount(block.hash[:, ids.reshape(-1)].reshape(-1), minlength=4).tolist()
    # the same token id always reaches the same experts, whatever its hidden state
    same = block(torch.randn(1, 2, 16), torch.tensor([[3, 3]]))[2]
    assert int((same > 0).sum()) <= 2


def test_hash_moe_is_matched_like_the_moe():
    """Iso-active with dense, iso-total with the group's L3 model; only the routers differ."""
    dense = presets.get("tiny")
    l3, moe, hashed = (presets.get("tiny", f) for f in ("l3", "moe", "hash_moe"))
    pd, pl, pm, ph = (count_params(c) for c in (dense, l3, moe, hashed))
    assert abs(ph.active / pd.active - 1) <= 0.02 and abs(ph.total / pl.total - 1) <= 0.02
    assert hashed.family == "hash_moe" and hashed.moe is not None
    same = replace(hashed, family="moe")  # the same experts with routers: router params are the difference
    assert count_params(same).total - ph.total == hashed.dim * hashed.moe.num_experts * hashed.n_layers
    assert ph.active_by_category["experts"] == hashed.moe.top_k * mlp_params(
        hashed.dim, hashed.moe.ffn_dim
    ) * (len(hashed.moe.positions))
    assert pm.active > 0


def test_hash_moe_rejects_expert_parallelism():
    dense_cfg = presets.get("debug")
    with pytest.raises(ValueError, match="moe.ep_size must be 1"):
        _hash_cfg(dense_cfg, num_experts=2, ep_size=2)
