"""Iso-sparse matching: same depth, active within 2% of the dense base, total within 2% of the target."""

import re
from dataclasses import replace

import numpy as np
import pytest

from workloads.l3.allocation import uniform_allocate
from workloads.models import presets
from workloads.models.accounting import count_params
from workloads.models.config import ModelConfig
from workloads.models.isosparse import default_l3, match, matched_set

ODD = ModelConfig(
    vocab_size=5000, dim=384, n_layers=10, n_heads=6, n_kv_heads=6, ffn_dim=1000, tie_embeddings=True
)
BASES = [presets.get("debug"), presets.get("tiny"), presets.get("small"), presets.get("paper-800m"), ODD]


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.mark.parametrize("base", BASES, ids=lambda b: f"{b.n_layers}x{b.dim}")
@pytest.mark.parametrize("family", ["l3", "moe"])
@pytest.mark.parametrize("sparsity", [3.0, 6.0])
def test_match_hits_active_and_total(base, family, sparsity):
    cfg = match(base, family=family, sparsity=sparsity)
    want_active = count_params(base).active
    pc = count_params(cfg)
    assert cfg.family == family and cfg.n_layers == base.n_layers and cfg.dim == base.dim
    assert rel(pc.active, want_active) <= 0.02
    assert rel(pc.total, sparsity * want_active) <= 0.02


def test_match_total_params_and_the_l3_recipe():
    base = presets.get("tiny")
    cfg = match(base, family="l3", total_params=20_000_000)
    assert rel(count_params(cfg).total, 20_000_000) <= 0.02
    recipe = default_l3(base)
    assert (cfg.l3.positions, cfg.l3.d_emb, cfg.l3.d_up, cfg.l3.cap) == (
        recipe.positions,
        recipe.d_emb,
        recipe.d_up,
        recipe.cap,
    )
    assert cfg.ffn_dim < base.ffn_dim  # the backbone paid for W_up / W_mix
    kept = match(base, family="l3")  # no target: the template budget is kept
    assert kept.l3.budget == recipe.budget


def test_matched_set_is_iso_active_and_iso_total():
    base = presets.get("small")
    models = matched_set(base, total_params=150_000_000)
    counts = {k: count_params(v) for k, v in models.items()}
    assert models["dense"] is base
    for family in ("l3", "moe"):
        assert rel(counts[family].active, counts["dense"].active) <= 0.02
    assert rel(counts["moe"].total, counts["l3"].total) <= 0.02
    assert rel(counts["l3"].total, 150_000_000) <= 0.02


def test_match_with_token_freqs_and_an_allocator():
    base = presets.get("debug")
    freqs = np.arange(1, base.vocab_size + 1, dtype=np.float64)
    vocab = base.vocab_size
    cfg = match(
        base, family="l3", sparsity=3.0, token_freqs=freqs, allocate=lambda b: uniform_allocate(vocab, b, 512)
    )
    counts = {p: uniform_allocate(vocab, cfg.l3.budget, 512) for p in cfg.l3.positions}
    pc = count_params(cfg, token_freqs=freqs, l3_counts=counts)
    assert rel(pc.active, count_params(base).active) <= 0.02
    assert rel(pc.total, 3.0 * count_params(base).active) <= 0.02


def test_moe_top_k_can_be_fixed():
    cfg = match(presets.get("small"), family="moe", sparsity=4.0, top_ks=(2,))
    assert cfg.moe.top_k == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "l3", "sparsity": 1.05}, "cannot match a l3 model to active="),
        ({"family": "l3", "sparsity": 1000.0}, "cannot match a l3 model to active="),
        ({"family": "moe", "sparsity": 1000.0}, "cannot match a moe model to active="),
        ({"family": "moe"}, "family='moe' needs total_params or sparsity"),
        ({"family": "l3", "sparsity": 2.0, "total_params": 10**6}, "give total_params or sparsity, not both"),
        ({"family": "l3", "sparsity": 0.5}, "sparsity = total / active must be >= 1, got 0.5"),
        (
            {"family": "ngram", "sparsity": 2.0},
            "family must be 'l3', 'moe', 'hash_moe' or 'scone', got 'ngram'",
        ),
    ],
)
def test_impossible_matches_explain_themselves(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        match(presets.get("tiny"), **kwargs)
    if "cannot match" in message:
        assert "the closest achievable is active=" in str(err.value) and "total=" in str(err.value)


def test_l3_overhead_larger_than_the_mlps_is_impossible():
    base = replace(presets.get("debug"), ffn_dim=8)
    with pytest.raises(ValueError, match=r"cannot match a l3 model .* backbone ffn_dim=\d+"):
        match(base, family="l3")


def test_match_needs_a_dense_base():
    with pytest.raises(ValueError, match="match needs a dense base config, got family='l3'"):
        match(presets.get("debug", "l3"), family="moe", sparsity=2.0)
