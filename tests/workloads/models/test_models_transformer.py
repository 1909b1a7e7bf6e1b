"""The one Transformer on the `debug` preset: every family trains, is causal, and decodes with a KV cache."""

from dataclasses import replace

import pytest
import torch

from workloads.kernels.mlp_decode import cpu as mlp_cpu
from workloads.l3.allocation import uniform_allocate
from workloads.models import presets
from workloads.models.config import ModelConfig
from workloads.models.moe import MoEMLP
from workloads.models.transformer import Transformer

FAMILIES = ("dense", "l3", "moe")


def deterministic(cfg: ModelConfig) -> ModelConfig:
    """MoE without capacity drops or random routing choices: each token's output then depends on that
    token alone, which causality and cache equivalence need (capacity couples tokens in a batch)."""
    if cfg.moe is None:
        return cfg
    moe = replace(cfg.moe, drop_tokens=False, use_rts=False, top2_sampling=False, min_capacity=0)
    return replace(cfg, moe=moe)


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    counts = None
    if cfg.l3 is not None:
        counts = {p: uniform_allocate(cfg.vocab_size, cfg.l3.budget, cfg.l3.cap) for p in cfg.l3.positions}
    return Transformer(cfg, l3_counts=counts)


def tokens(cfg: ModelConfig, B: int = 2, T: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_backward(family):
    cfg = presets.get("debug", family)
    model = build(cfg)
    ids = tokens(cfg, B=4, T=32)
    logits, aux = model(ids)
    assert logits.shape == (4, 32, cfg.vocab_size)
    assert torch.isfinite(logits).all()
    assert aux.shape == () and (aux > 0 if family == "moe" else aux == 0)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()) + aux
    loss.backward()
    for name, p in model.named_parameters():
        # An expert that received no token has no gradient; every other parameter must.
        if "deepspeed_experts" not in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if family == "l3":
        assert model.layers[0].l3.keys.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_causal(family):
    cfg = deterministic(presets.get("debug", family))
    model = build(cfg).eval()
    ids = tokens(cfg)
    j = 9
    changed = ids.clone()
    changed[:, j] = (changed[:, j] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=1e-6)
    assert (a[:, j:] - b[:, j:]).abs().amax() > 1e-4  # the change does reach positions >= j


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_decode_equals_full_forward(family):
    cfg = deterministic(presets.get("debug", family))
    model = build(cfg).eval()
    ids = tokens(cfg, B=2, T=14)
    with torch.no_grad():
        full, _ = model(ids)
        cache = model.new_cache(batch_size=2, max_seq_len=16)
        steps = [model(ids[:, :5], cache)[0]]  # prefill
        steps.append(model(ids[:, 5:8], cache, start_pos=5)[0])  # chunked prefill after cached positions
        steps += [
            model(ids[:, t : t + 1], cache, start_pos=t)[0] for t in range(8, 14)
        ]  # one token at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cache_overflow_is_an_error():
    cfg = presets.get("debug")
    model = build(cfg)
    cache = model.new_cache(batch_size=1, max_seq_len=8)
    with pytest.raises(ValueError, match=r"positions \[6, 10\) do not fit in max_seq_len=8"):
        model(torch.zeros(1, 4, dtype=torch.long), cache, start_pos=6)
    with pytest.raises(ValueError, match=f"exceeds model.max_seq_len={cfg.max_seq_len}"):
        model.new_cache(batch_size=1, max_seq_len=1000)


def test_l3_residual_with_zero_mix_equals_model_without_l3():
    cfg = presets.get("debug", "l3")
    cfg = replace(cfg, l3=replace(cfg.l3, residual=True))
    dense_cfg = replace(cfg, family="dense", l3=None)  # same backbone (the l3 preset's ffn_dim)
    with_l3, without = build(cfg, seed=0), build(dense_cfg, seed=1)
    missing, unexpected = with_l3.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and missing and all(".l3." in key for key in missing)
    with torch.no_grad():
        for pos in cfg.l3.positions:
            with_l3.layers[pos].l3.mix.weight.zero_()
    ids = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(with_l3(ids)[0], without(ids)[0], rtol=0, atol=0)
        with_l3.layers[cfg.l3.positions[0]].l3.mix.weight.normal_()
        assert (with_l3(ids)[0] - without(ids)[0]).abs().amax() > 1e-3


def test_l3_sublayer_routes_by_the_token_ids():
    # Replace form, no residual: the L3 output depends on which rows the token ids select.
    cfg = presets.get("debug", "l3")
    model = build(cfg).eval()
    l3 = model.layers[cfg.l3.positions[0]].l3
    x = torch.randn(1, 4, cfg.dim)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert (l3(x, ids) - l3(x, ids.flip(1))).abs().amax() > 1e-4


def test_l3_counts_are_validated_and_defaulted():
    cfg = presets.get("debug", "l3")
    good = uniform_allocate(cfg.vocab_size, cfg.l3.budget, cfg.l3.cap)
    with pytest.raises(
        ValueError,
        match=rf"l3_counts\[0\] must have shape \({cfg.vocab_size},\) and sum to l3.budget={cfg.l3.budget}",
    ):
        Transformer(cfg, l3_counts={0: good[:-1]})
    with pytest.raises(ValueError, match=r"positions \[3\] that are not in l3.positions=\(0, 2\)"):
        Transformer(cfg, l3_counts={3: good})
    skewed = good.copy()
    skewed[:] = 2
    skewed[0] = 600
    skewed[1 : 1 + cfg.l3.budget - int(skewed.sum())] += 1  # sums to the budget; only the cap is violated
    with pytest.raises(ValueError, match="has a token with 600 rows > l3.cap=512"):
        Transformer(replace(cfg, l3=replace(cfg.l3, allocation="uniform")), l3_counts={0: skewed})
    with pytest.warns(UserWarning, match="l3.allocation='lzw' but no counts were given for L3 positions"):
        model = Transformer(cfg)
    assert int(model.layers[0].l3.counts().sum()) == cfg.l3.budget
    with pytest.raises(ValueError, match="l3_counts given for positions"):
        Transformer(presets.get("debug"), l3_counts={0: good})


def test_bfloat16_build_and_tied_embeddings():
    cfg = replace(presets.get("debug"), dtype="bfloat16", tie_embeddings=True)
    model = build(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.lm_head.weight is model.tok_emb.weight
    logits, _ = model(tokens(cfg))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


# Serving (Transformer.serve / Block.serve): a served model decodes as the unserved one (dense, L3, MoE top-1
# and top-2, at the batch sizes the fused decode MLP takes and past them), the kernel runs exactly where it
# may, a MoE's experts are stacked without a copy, and what turns the kernel off does.
needs_numba = pytest.mark.skipif(mlp_cpu.numba is None, reason="numba is not installed")


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """The kind of every fused decode MLP call ("dense" / "moe"), in order."""
    calls: list[str] = []
    run = mlp_cpu.run

    def counted(h, tables):
        calls.append(tables[0])
        return run(h, tables)

    monkeypatch.setattr(mlp_cpu, "run", counted)
    return calls


@pytest.fixture
def threads():
    """Set torch's thread count for a test (the dense kernel's position cap depends on it)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _model(family: str, top_k: int = 1) -> Transformer:
    cfg = deterministic(presets.get("debug", family))
    if cfg.moe is not None:
        cfg = replace(cfg, moe=replace(cfg.moe, top_k=top_k))
    model = build(cfg).eval()
    if cfg.moe is not None:
        with torch.no_grad():  # confident, distinct routes (the default init is near-uniform)
            for block in model.layers:
                if isinstance(block.mlp, MoEMLP):
                    block.mlp.gate.weight.normal_(
                        0, 1.0, generator=torch.Generator().manual_seed(block.index)
                    )
    return model


def _decode(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Prefill 3 tokens, then one token per step with the KV cache: (B, T, vocab) logits."""
    B, T = ids.shape
    cache = model.new_cache(B, T)
    with torch.no_grad():
        steps = [model(ids[:, :3], cache)[0]]
        steps += [model(ids[:, t : t + 1], cache, start_pos=t)[0] for t in range(3, T)]
    return torch.cat(steps, dim=1)


@needs_numba
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize(("family", "top_k"), [("dense", 1), ("l3", 1), ("moe", 1), ("moe", 2)])
@pytest.mark.parametrize("batch", [1, 3, 8, 9])
def test_served_decode_equals_the_unserved_model(family, top_k, batch, n_threads, kernel_calls, threads):
    threads(n_threads)
    model = _model(family, top_k)
    moe_blocks = sum(isinstance(b.mlp, MoEMLP) for b in model.layers)
    ids = tokens(model.config, B=batch, T=7, seed=batch)
    model.serve("deepspeed" if family == "moe" else "dropless")  # MoE's torch reference: DeepSpeed's layer
    assert not any(b._decode for b in model.layers if isinstance(b.mlp, MoEMLP))
    want = _decode(model, ids)
    model.serve()
    kernel_calls.clear()
    got = _decode(model, ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The forwards: a prefill of 3 × batch positions, then 4 steps of batch. A MoE takes the kernel up to
    # MAX_POSITIONS positions; a dense MLP too on 1 thread, else at 1 position only.
    dense_cap = mlp_cpu.MAX_POSITIONS if n_threads == 1 else 1
    want_calls = []
    for positions in [3 * batch] + [batch] * 4:
        want_calls += ["moe"] * moe_blocks * (positions <= mlp_cpu.MAX_POSITIONS)
        want_calls += ["dense"] * (model.config.n_layers - moe_blocks) * (positions <= dense_cap)
    assert sorted(kernel_calls) == sorted(want_calls)


@needs_numba
def test_moe_recording_balance_keeps_the_torch_path_and_counts(kernel_calls):
    model = _model("moe").serve()
    ids = tokens(model.config, B=1, T=1)
    block = next(b for b in model.layers if isinstance(b.mlp, MoEMLP))
    block.mlp.record_balance = True
    with torch.no_grad():
        counts = model(ids, return_expert_counts=True)[2]
    assert int(counts[block.index].sum()) == 1  # its one token, counted by the module
    assert kernel_calls.count("moe") == sum(isinstance(b.mlp, MoEMLP) for b in model.layers) - 1


@needs_numba
def test_grad_mode_and_other_dtypes_keep_the_torch_path(kernel_calls):
    model = _model("dense").serve()
    ids = tokens(model.config, B=1, T=1)
    model(ids)  # grad mode: autograd's path
    assert kernel_calls == []
    model.double()  # float64 weights: no tables
    assert all(b._decode is None for b in model.layers)
    with torch.no_grad():
        model(ids)
    assert kernel_calls == []
    model.float()  # back to float32: the tables are built again on the new storages
    with torch.no_grad():
        want = model(ids)[0]
        assert kernel_calls == ["dense"] * model.config.n_layers
        for block in model.layers:
            block.serve(False)
        torch.testing.assert_close(model(ids)[0], want, rtol=1e-5, atol=1e-5)
    assert len(kernel_calls) == model.config.n_layers


@needs_numba
def test_in_place_weight_updates_show_through(kernel_calls):
    model = _model("moe").serve()
    ids = tokens(model.config, B=1, T=1)
    with torch.no_grad():
        before = model(ids)[0]
        for p in model.parameters():
            p.mul_(1.5)  # load_state_dict copies in place like this
        after = model(ids)[0]
        for block in model.layers:
            block.serve(False)
        torch.testing.assert_close(after, model(ids)[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)
    assert "moe" in kernel_calls


@needs_numba
def test_stacked_experts_alias_the_weights_and_keep_aliased_slots():
    layer = _model("moe").layers[0].mlp
    x = torch.randn(5, layer.gate.weight.shape[1])
    with torch.no_grad():
        outputs = [e(x) for e in layer.experts]
        slots, w1, w3, w2 = layer.stacked_experts()
        assert slots.tolist() == list(range(len(layer.experts)))
        for e, expert in enumerate(layer.experts):  # each weight is now a view of its stack
            assert (
                expert.w1.weight.data_ptr() == w1[e].data_ptr()
                and expert.w2.weight.data_ptr() == w2[e].data_ptr()
            )
            assert expert.w3.weight.untyped_storage().data_ptr() == w3.untyped_storage().data_ptr()
            torch.testing.assert_close(expert(x), outputs[e], rtol=0, atol=0)
        layer.experts[2] = layer.experts[0]  # the bench's moe-1x control aliases slots like this
        slots, w1, _, _ = layer.stacked_experts()
    assert slots.tolist() == [0, 1, 0, 2][: len(layer.experts)] and w1.shape[0] == len(layer.experts) - 1


def test_hash_moe_blocks_serve_through_their_module(kernel_calls):
    model = build(presets.get("debug", "hash_moe")).eval()
    ids = tokens(model.config, B=1, T=5)
    want = _decode(model, ids)
    model.serve()
    assert all(b._decode is None for b in model.layers)  # every debug hash-MoE block is hash-routed
    torch.testing.assert_close(_decode(model, ids), want, rtol=0, atol=0)
    assert kernel_calls == []
