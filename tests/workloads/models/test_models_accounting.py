"""Accounting from config arithmetic equals the real modules, to the parameter."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.l3.allocation import uniform_allocate
from workloads.models import presets
from workloads.models.accounting import CATEGORIES, block_counts, count_params
from workloads.models.transformer import Transformer


def build(cfg):
    counts = None
    if cfg.l3 is not None:
        counts = {p: uniform_allocate(cfg.vocab_size, cfg.l3.budget, cfg.l3.cap) for p in cfg.l3.positions}
    return Transformer(cfg, l3_counts=counts)


def active_from_module(model: Transformer, token_freqs=None) -> float:
    """Active parameters counted on the built module, independently of accounting.py."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())  # embedding and head count fully (L3_SPEC §5)
    for block in model.layers:
        if cfg.moe is not None and block.index in cfg.moe.positions:
            per_expert = sum(p.numel() for p in block.mlp.experts[0].parameters())
            n -= (cfg.moe.num_experts - cfg.moe.top_k) * per_expert
        if block.l3 is not None:
            table = [block.l3.keys] + ([] if block.l3.tied else [block.l3.values])
            rows = block.l3.counts().double()
            mean = rows.mean() if token_freqs is None else (rows * token_freqs).sum() / token_freqs.sum()
            n += float(mean) * sum(t.shape[1] for t in table) - sum(t.numel() for t in table)
    return n


CASES = [
    ("debug", "dense", {}),
    ("debug", "l3", {}),
    ("debug", "moe", {}),
    ("tiny", "dense", {}),
    ("tiny", "l3", {}),
    ("tiny", "moe", {}),
    ("debug", "dense", {"tie_embeddings": True}),
    ("debug", "l3", {"tie_embeddings": True}),
]


@pytest.mark.parametrize(("name", "family", "overrides"), CASES)
def test_counts_equal_the_module(name, family, overrides):
    cfg = replace(presets.get(name, family), **overrides)
    model = build(cfg)
    pc = count_params(cfg)
    assert pc.total == sum(p.numel() for p in model.parameters())
    assert pc.active == round(active_from_module(model))
    assert sum(pc.by_category.values()) == pc.total
    assert sum(pc.active_by_category.values()) == pc.active
    assert set(pc.by_category) == set(CATEGORIES)


def test_tied_l3_tables_and_categories():
    cfg = presets.get("debug", "l3")
    cfg = replace(cfg, l3=replace(cfg.l3, tied=True, d_emb=cfg.dim))
    model = build(cfg)
    pc = count_params(cfg)
    assert pc.total == sum(p.numel() for p in model.parameters())
    assert pc.by_category["l3_tables"] == 2 * cfg.l3.budget * cfg.dim  # keys only, 2 layers
    assert pc.active == round(active_from_module(model))
    moe = count_params(presets.get("debug", "moe"))
    assert (
        moe.by_category["l3_tables"] == 0
        and moe.by_category["experts"] > moe.active_by_category["experts"] > 0
    )


def test_token_freqs_weight_the_active_rows():
    cfg = presets.get("debug", "l3")
    vocab, budget = cfg.vocab_size, cfg.l3.budget
    counts = np.ones(vocab, dtype=np.int64)
    counts[7] = 500  # token 7 owns many rows (the cap is 512) ...
    others = np.flatnonzero(np.arange(vocab) != 7)
    extra = budget - int(counts.sum())  # the rest of the budget spread over the other tokens
    counts[others] += extra // others.size
    counts[others[: extra % others.size]] += 1
    l3_counts = {p: counts for p in cfg.l3.positions}
    freqs = np.ones(vocab)
    freqs[7] = 1000.0  # ... and is frequent
    weighted = count_params(cfg, token_freqs=freqs, l3_counts=l3_counts)
    plain = count_params(cfg, l3_counts=l3_counts)
    width = cfg.dim + cfg.l3.d_emb
    mean = (freqs * counts).sum() / freqs.sum()
    assert weighted.active_by_category["l3_tables"] == round(2 * mean * width)
    assert plain.active_by_category["l3_tables"] == round(2 * budget / vocab * width)
    assert weighted.active > plain.active and weighted.total == plain.total
    assert (
        weighted.active_max
        == weighted.active - weighted.active_by_category["l3_tables"] + 2 * counts[7] * width
    )
    assert counts.sum() == budget and counts.max() == 500
    low = weighted.active - weighted.active_by_category["l3_tables"] + 2 * int(counts.min()) * width
    assert weighted.active_min == low
    assert not weighted.estimated and plain.estimated  # no corpus: the budget / vocab guess, labelled

    model = Transformer(cfg, l3_counts=l3_counts)
    assert weighted.active == round(active_from_module(model, torch.from_numpy(freqs)))


def test_token_freqs_need_counts_for_lzw():
    cfg = presets.get("debug", "l3")
    freqs = np.ones(cfg.vocab_size)
    with pytest.raises(ValueError, match="token_freqs weighting needs the rows per token of L3 position 0"):
        count_params(cfg, token_freqs=freqs)
    uniform = replace(cfg, l3=replace(cfg.l3, allocation="uniform"))
    assert count_params(uniform, token_freqs=freqs).active == count_params(uniform).active
    assert not count_params(uniform, token_freqs=freqs).estimated and count_params(uniform).estimated
    vocab, budget = cfg.vocab_size, cfg.l3.budget
    with pytest.raises(ValueError, match=rf"token_freqs must be \({vocab},\) non-negative"):
        count_params(uniform, token_freqs=freqs[:10])
    with pytest.raises(
        ValueError, match=rf"l3_counts\[2\] must have shape \({vocab},\) and sum to l3.budget={budget}"
    ):
        count_params(cfg, l3_counts={2: np.ones(vocab, dtype=np.int64)})


def test_dense_active_equals_total_and_embeddings_count_fully():
    """L3_SPEC §5 / the paper's Table 1: a dense model's active count is its total (809M / 809M)."""
    for name in presets.names():
        pc = count_params(presets.get(name, "dense"))
        assert pc.active == pc.total == pc.active_max == pc.active_min
    cfg = presets.get("debug", "dense")
    pc = count_params(cfg)
    assert pc.active_by_category["embeddings"] == 2 * cfg.vocab_size * cfg.dim  # untied: embedding + head
    tied = count_params(replace(cfg, tie_embeddings=True))
    assert tied.active_by_category["embeddings"] == cfg.vocab_size * cfg.dim


def test_one_row_per_token_l3_active_is_closed_form():
    """budget = vocab: every token owns one row, so the L3 active rows are exactly (dim + d_emb) per layer
    whatever the corpus, and max = min = mean."""
    cfg = presets.get("debug", "l3")
    cfg = replace(cfg, l3=replace(cfg.l3, budget=cfg.vocab_size))
    ones = {p: np.ones(cfg.vocab_size, dtype=np.int64) for p in cfg.l3.positions}
    freqs = np.arange(1, cfg.vocab_size + 1, dtype=np.float64)
    pc = count_params(cfg, token_freqs=freqs, l3_counts=ones)
    assert pc.active_by_category["l3_tables"] == 2 * (cfg.dim + cfg.l3.d_emb)
    assert pc.active_max == pc.active == pc.active_min
    assert pc.total - pc.active == 2 * (cfg.vocab_size - 1) * (cfg.dim + cfg.l3.d_emb)


@pytest.mark.parametrize("family", ["dense", "l3", "moe", "hash_moe"])
def test_block_counts_equal_each_built_block(family):
    """What the capacity model gets per block (ModelShape.blocks) is each real block's split."""
    cfg = presets.get("debug", family)
    model = build(cfg)
    for (dense, experts, tables), block in zip(block_counts(cfg), model.layers, strict=True):
        table = [] if block.l3 is None else [block.l3.keys] + ([] if block.l3.tied else [block.l3.values])
        expert = block.mlp.experts.parameters() if hasattr(block.mlp, "experts") else ()
        assert (tables, experts) == (sum(t.numel() for t in table), sum(p.numel() for p in expert))
        assert dense + experts + tables == sum(p.numel() for p in block.parameters())


def _tiny_cost_config(**kw):
    from workloads.models.config import ModelConfig

    # vocab 10, dim 4, 1 layer, 2 heads of 2 (1 kv head), ffn 8: attention 4·4 + 2·4·2 + 4·4 = 48,
    # MLP 3·4·8 = 96, norms 2·4 + final 4: dense 156; embeddings 2 · 10·4 = 80 (untied).
    return ModelConfig(vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, **kw)


def test_decode_prefill_and_train_costs_from_closed_forms():
    from workloads.models.accounting import decode_step_cost, prefill_cost, train_step_cost

    cfg = _tiny_cost_config()
    pc = count_params(cfg)
    assert (pc.active_by_category["dense"], pc.total, pc.flops_active) == (156, 236, 196)
    # decode, batch 2 at 3 cached positions, fp32: weights 156 + LM head 40 + 2 embedding rows of 4 = 204;
    # KV 2 (k, v) · 1 layer · 1 kv head · 2 dims · 6 positions = 24 values. FLOPs per token 2 · 196 +
    # attention 4 · 1 layer · 2 heads · 2 dims · 3 positions = 392 + 48.
    assert decode_step_cost(cfg, pc, 2, 3) == (4.0 * (204 + 24), 2.0 * (392 + 48))
    # prefill of 2 prompts of 3: every stored weight once (236) + KV of 6 positions (24 values); attention
    # over (3 + 1) / 2 = 2 positions on average: 6 tokens · (392 + 4·2·2·2).
    assert prefill_cost(cfg, pc, 2, 3) == (4.0 * (236 + 24), 6.0 * (392 + 32))
    # train: 10 accesses per parameter (fwd, bwd, grad, AdamW) and 3× the forward's FLOPs.
    assert train_step_cost(cfg, pc, 2, 3, element_bytes=2) == (10.0 * 236 * 2, 3 * 6.0 * (392 + 32))


def test_decode_cost_of_a_moe_batch_counts_the_experts_it_touches():
    from workloads.models.accounting import decode_step_cost, mlp_params
    from workloads.models.config import MoEConfig

    moe = MoEConfig(positions=(0,), num_experts=4, ffn_dim=8, top_k=1)
    cfg = _tiny_cost_config(family="moe", moe=moe)
    pc = count_params(cfg)
    one, _ = decode_step_cost(cfg, pc, 1, 3)
    touched_3, flops = decode_step_cost(cfg, pc, 8, 3, experts_touched=3)
    default_8, _ = decode_step_cost(cfg, pc, 8, 3)  # min(8 routes, 4 experts) = all 4
    expert = 4.0 * mlp_params(4, 8)
    assert default_8 - touched_3 == expert  # the 4th expert
    kv_and_rows = 4.0 * (2 * 2 * (8 - 1) * 3 + (8 - 1) * 4)  # 7 more sequences' KV and embedding rows
    assert touched_3 - one == 2 * expert + kv_and_rows  # 3 experts vs 1 at batch 1
    assert flops == 8 * (2.0 * pc.flops_active + 48)


def test_decode_working_set_is_every_reachable_weight_and_the_kv_cache():
    from workloads.models.accounting import decode_step_cost, decode_working_set_bytes, mlp_params
    from workloads.models.config import MoEConfig

    # dense, untied: stored 236, of which the input table's 10 - 2 unread rows of 4 are out: 204 + KV 24,
    # the same bytes a step moves (every weight a dense step can reach, it reads)
    dense = _tiny_cost_config()
    pc = count_params(dense)
    assert (
        decode_working_set_bytes(dense, pc, 2, 3) == 4.0 * (204 + 24) == decode_step_cost(dense, pc, 2, 3)[0]
    )
    tied = _tiny_cost_config(tie_embeddings=True)  # stored 196: the one table is the LM head, read whole
    assert decode_working_set_bytes(tied, count_params(tied), 2, 3) == 4.0 * (196 + 24)
    # a top-1 MoE at batch 1 moves one expert a step but keeps touching all 4 across steps
    moe = _tiny_cost_config(family="moe", moe=MoEConfig(positions=(0,), num_experts=4, ffn_dim=8, top_k=1))
    pc = count_params(moe)
    step, _ = decode_step_cost(moe, pc, 1, 3)
    assert decode_working_set_bytes(moe, pc, 1, 3, element_bytes=4) - step == 3 * 4.0 * mlp_params(4, 8)
