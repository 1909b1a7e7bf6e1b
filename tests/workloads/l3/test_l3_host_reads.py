"""Host reads per L3 call: at most one in the forward (the plan's bin sizes, or the small path's
d_max) and none in the backward; the GPU test asserts the same bound with the CUDA sync debug mode."""

import warnings

import pytest
import torch

from workloads.l3.host_reads import count_host_reads
from workloads.l3.layer import L3Layer


def _layer(impl: str, device: str = "cpu") -> L3Layer:
    torch.manual_seed(0)
    counts = torch.randint(1, 40, (50,)).tolist()
    return L3Layer(16, counts, 8, 32, impl=impl, check_ids=False).to(device)


def _fwd_bwd_reads(layer: L3Layer, n: int) -> tuple[int, int]:
    x = torch.randn(1, n, 16, requires_grad=True)
    ids = torch.randint(0, 50, (1, n))
    with count_host_reads() as fwd:
        out = layer(x, ids)
    with count_host_reads() as bwd:
        out.sum().backward()
    return sum(fwd.values()), sum(bwd.values())


@pytest.mark.parametrize("impl, n", [("auto", 1), ("auto", 8), ("auto", 64), ("auto", 300), ("sorted", 1)])
def test_one_host_read_forward_none_backward(impl, n):
    assert _fwd_bwd_reads(_layer(impl), n) == (1, 0)


def test_the_counter_sees_reads_and_the_range_check_is_one():
    """The counter is not blind: the optional id range check adds exactly one read."""
    layer = _layer("auto")
    layer.check_ids = True
    assert _fwd_bwd_reads(layer, 8) == (2, 0)
    with count_host_reads() as reads:
        torch.ones(3).tolist()
        bool(torch.ones(()))
    assert reads == {"tolist": 1, "__bool__": 1}


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1, 8, 64, 2048])
def test_cuda_syncs_per_l3_call(n):
    """On a GPU, `set_sync_debug_mode` warns at every synchronizing op: ≤ 1 per forward, 0 per backward."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    layer = _layer("auto", "cuda")
    x = torch.randn(1, n, 16, device="cuda", requires_grad=True)
    ids = torch.randint(0, 50, (1, n), device="cuda")
    layer(x, ids).sum().backward()  # warm-up: lazy CUDA init syncs are not the layer's
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as fwd:
            warnings.simplefilter("always")
            out = layer(x, ids)
        with warnings.catch_warnings(record=True) as bwd:
            warnings.simplefilter("always")
            out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(fwd) <= 1 and len(bwd) == 0, [str(w.message) for w in fwd + bwd]


@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (4, 64)])
def test_a_transformer_step_reads_once_per_l3_call(shape):
    """Inside the model the id range check is off (tok_emb and the jobs' entry checks cover it), so a
    training forward reads exactly once per L3 layer and the backward never."""
    from workloads.models.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(uniform_config())
    n_l3 = sum(1 for block in model.layers if block.l3 is not None)
    ids = torch.randint(0, 256, shape)
    with count_host_reads() as fwd:
        logits, _ = model(ids)
    with count_host_reads() as bwd:
        logits.sum().backward()
    assert n_l3 >= 1 and sum(fwd.values()) == n_l3 and sum(bwd.values()) == 0


def uniform_config():
    """The debug L3 preset with a uniform allocation (no corpus needed, no warning)."""
    from dataclasses import replace

    from workloads.models import presets

    cfg = presets.get("debug", "l3")
    return replace(cfg, l3=replace(cfg.l3, allocation="uniform"))
