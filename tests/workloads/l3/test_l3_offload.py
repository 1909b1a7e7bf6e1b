"""L3 offload (L3_SPEC §4): offloaded logits == on-device logits exactly, copy accounting, hooks, errors.

The GPU tests check what CPU cannot: pinned host tables, the copy on a side stream overlapping compute,
and exact equality on CUDA.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.l3.allocation import uniform_allocate
from workloads.l3.offload import ALIGN_BYTES, l3_layers, offload_l3_tables
from workloads.models import presets
from workloads.models.transformer import Transformer


def _counts(vocab: int, budget: int, seed: int) -> np.ndarray:
    """A Zipf-like allocation: every token ≥ 1 row, frequent ids many more (like LZW's)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    counts = 1 + rng.multinomial(budget - vocab, p / p.sum())
    return rng.permutation(counts).astype(np.int64)


def _model(
    *, tied: bool, tie_embeddings: bool = False, seed: int = 0, device="cpu", budget: int | None = None
) -> Transformer:
    cfg = presets.get("debug", "l3")
    l3 = replace(cfg.l3, tied=tied, d_emb=cfg.dim if tied else cfg.l3.d_emb, budget=budget or cfg.l3.budget)
    cfg = replace(cfg, l3=l3, tie_embeddings=tie_embeddings)
    counts = {  # an explicit budget is spread uniformly (a Zipf draw would exceed the cap)
        pos: uniform_allocate(cfg.vocab_size, budget, l3.cap)
        if budget
        else _counts(cfg.vocab_size, l3.budget, seed + pos)
        for pos in l3.positions
    }
    torch.manual_seed(seed)
    model = Transformer(cfg, l3_counts=counts).to(device).eval()
    with torch.no_grad():  # peaky softmax over a token's rows: a wrong row mapping cannot hide
        for layer in l3_layers(model):
            layer.keys.mul_(30)
    return model


def _ids(shape, seed: int, vocab: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, shape, generator=g)
    ids.view(-1)[: ids.numel() // 2] = ids.view(-1)[0]  # half the batch repeats one id
    return ids


def _generate(model: Transformer, prompt: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Prefill logits, then the logits of `steps` greedy decode steps with the KV cache."""
    B, T = prompt.shape
    cache = model.new_cache(B, T + steps)
    with torch.no_grad():
        logits, _ = model(prompt, cache)
        out = [logits]
        for t in range(steps):
            nxt = logits[:, -1:].argmax(-1)  # (B, 1)
            logits, _ = model(nxt, cache, start_pos=T + t)
            out.append(logits)
    return out


SHAPES = [(1, 1), (1, 9), (3, 5), (8, 2)]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{t}" for b, t in SHAPES])
def test_offloaded_logits_equal_device_logits_prefill_and_decode(shape, tied):
    model = _model(tied=tied, tie_embeddings=tied)
    prompt = _ids(shape, seed=shape[0] * 10 + shape[1])
    on_device = _generate(model, prompt, steps=3)
    handle = offload_l3_tables(model, compact=True)
    offloaded = _generate(model, prompt, steps=3)
    assert handle.stats.steps == 4  # one prefill + three decode forwards
    for i, (a, b) in enumerate(zip(offloaded, on_device, strict=True)):
        assert torch.equal(a, b), f"forward {i} differs"


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_cpu_default_reads_the_host_tables_in_place(tied):
    """On CPU the default offload copies nothing: no hook, no thread, no table source; the lookup reads
    the (host) tables themselves, so the logits are those of the model as it was."""
    model = _model(tied=tied, tie_embeddings=tied)
    prompt = _ids((3, 5), seed=11)
    on_device = _generate(model, prompt, steps=3)
    handle = offload_l3_tables(model)
    assert not handle.compact and handle.prefetcher._worker is None
    assert all(layer.table_source is None and layer.keys.device.type == "cpu" for layer in l3_layers(model))
    offloaded = _generate(model, prompt, steps=3)
    assert handle.stats.steps == 0 and handle.stats.bytes_copied == 0 and handle.stats.wait_s == []
    for a, b in zip(offloaded, on_device, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="already offloaded"):
        offload_l3_tables(model, compact=True)
    handle.remove()
    offload_l3_tables(model, compact=True).remove()


def test_bytes_and_rows_copied_per_step_match_the_distinct_ids():
    model = _model(tied=False)
    layers = l3_layers(model)
    ids = torch.tensor([[7, 7, 3, 200], [3, 9, 7, 7]])
    handle = offload_l3_tables(model, compact=True)
    with torch.no_grad():
        model(ids)
    uniq = [3, 7, 9, 200]
    rows = [int(layer.counts()[uniq].sum()) for layer in layers]
    assert handle.stats.last_step_rows == sum(rows) == handle.stats.rows_copied
    row_bytes = (layers[0].dim + layers[0].d_emb) * 4  # float32 key + value
    assert handle.stats.table_bytes_copied == sum(rows) * row_bytes

    def aligned(n: int) -> int:
        return -(-n // ALIGN_BYTES) * ALIGN_BYTES

    # per layer: remapped ids (8 int64), local offsets (5 int64), keys, values — each segment aligned
    dim, d_emb = layers[0].dim, layers[0].d_emb
    expected = sum(aligned(8 * 8) + aligned(5 * 8) + aligned(r * dim * 4) + r * d_emb * 4 for r in rows)
    assert handle.stats.last_step_bytes == expected
    with torch.no_grad():
        model(ids[:, :1])  # ids 7 and 3
    assert handle.stats.steps == 2
    assert handle.stats.last_step_rows == sum(int(layer.counts()[[3, 7]].sum()) for layer in layers)
    assert handle.stats.bytes_per_step() == handle.stats.bytes_copied / 2


def test_tables_live_on_the_host_and_remove_restores_the_model():
    model = _model(tied=False)
    prompt = _ids((2, 6), seed=1)
    with torch.no_grad():
        before, _ = model(prompt)
    handle = offload_l3_tables(model, compact=True)
    layers = l3_layers(model)
    assert all(layer.table_source is not None for layer in layers)
    assert handle.host_table_bytes == sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)
    with pytest.raises(ValueError, match="already offloaded"):
        offload_l3_tables(model, compact=True)
    handle.remove()
    handle.remove()  # idempotent
    assert all(layer.table_source is None for layer in layers)
    with torch.no_grad():
        after, _ = model(prompt)
    assert torch.equal(before, after)
    assert handle.stats.steps == 0  # the hook is gone
    offload_l3_tables(model, compact=True).remove()  # can offload again after remove


def test_layer_called_outside_the_model_fetches_its_rows_itself():
    model = _model(tied=False)
    layer = l3_layers(model)[1]
    x = torch.randn(2, 5, layer.dim)
    ids = _ids((2, 5), seed=3)
    with torch.no_grad():
        expected = layer(x, ids)
        handle = offload_l3_tables(model, compact=True)
        got = layer(x, ids)  # no model pre-hook ran: a synchronous fetch for this layer only
    assert torch.equal(got, expected)
    assert handle.stats.steps == 1


def test_prefetch_for_other_ids_is_not_used():
    model = _model(tied=True)
    layer = l3_layers(model)[0]
    x = torch.randn(1, 4, layer.dim)
    ids, other = _ids((1, 4), seed=4), _ids((1, 4), seed=5)
    with torch.no_grad():
        expected = layer(x, ids)
        handle = offload_l3_tables(model, compact=True)
        handle.prefetch(other)  # stale rows for different ids must not be consumed
        got = layer(x, ids)
    assert torch.equal(got, expected)


def test_errors():
    with pytest.raises(ValueError, match="no L3 layers"):
        offload_l3_tables(Transformer(presets.get("debug", "dense")))
    model = _model(tied=False)
    offload_l3_tables(model, compact=True)
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=f"token id {vocab} is outside the L3 vocabulary"), torch.no_grad():
        model.layers[0].l3(torch.zeros(1, 2, 64), torch.tensor([[1, vocab]]))


# ---------------------------------------------------------------------------------------------- GPU


def _cuda_model(dtype: torch.dtype) -> Transformer:
    return _model(tied=False, device="cuda").to(dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_offloaded_logits_equal_device_logits_and_tables_are_pinned(dtype):
    model = _cuda_model(dtype)
    prompt = _ids((4, 8), seed=7).cuda()
    on_device = _generate(model, prompt, steps=4)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    handle = offload_l3_tables(model, compact=True)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before - handle.host_table_bytes
    for layer in l3_layers(model):
        assert layer.keys.device.type == "cpu" and layer.keys.is_pinned() and layer.values.is_pinned()
    offloaded = _generate(model, prompt, steps=4)
    for a, b in zip(offloaded, on_device, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_copy_runs_on_a_side_stream_overlapping_compute(tmp_path):
    """In a profiler trace, every host-to-device copy of the table rows runs on a stream other than the
    compute stream, and at least one overlaps in time with a compute kernel."""
    from torch.profiler import ProfilerActivity, profile

    # ~40 MB of rows per L3 layer per step: the second layer's copy is still running when the blocks start
    model = _model(tied=False, device="cuda", budget=256 * 400)
    offload_l3_tables(model, compact=True)
    prompt = torch.randint(0, 256, (64, 64), device="cuda")
    with torch.no_grad():
        model(prompt)  # warm-up: allocator, kernels
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(prompt)
            torch.cuda.synchronize()
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X"]
    copies = [e for e in events if e.get("cat") == "gpu_memcpy" and "HtoD" in e.get("name", "")]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    assert copies and kernels
    compute_streams = {e["tid"] for e in kernels}
    big = [c for c in copies if c.get("args", {}).get("bytes", 0) > 4096]
    assert big and all(c["tid"] not in compute_streams for c in big)

    def overlaps(a, b) -> bool:
        return a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]

    assert any(overlaps(c, k) for c in big for k in kernels)
