"""The Triton impl inside the model: an L3 layer's output and gradients equal the reference impl's, and
the offloaded model (compacted host tables, L3_SPEC §4) gives the on-device logits. CPU: interpreter."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads.l3.layer import L3Layer
from workloads.l3.offload import l3_layers, offload_l3_tables
from workloads.models import presets
from workloads.models.transformer import Transformer

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_layer_with_triton_equals_layer_with_reference(tied):
    counts = [3, 1, 70, 2, 5, 1]
    torch.manual_seed(0)
    ref = L3Layer(8, counts, 8 if tied else 5, 7, tied=tied, impl="reference").to(DEVICE)
    fast = L3Layer(8, counts, 8 if tied else 5, 7, tied=tied, impl="triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ref.keys.mul_(10)
        fast.keys.copy_(ref.keys)
    x = torch.randn(2, 9, 8, device=DEVICE)
    ids = torch.tensor([[2, 2, 0, 1, 5, 2, 3, 4, 2], [0, 0, 0, 2, 2, 1, 1, 3, 4]], device=DEVICE)
    outs, grads = [], []
    for layer in (ref, fast):
        out = layer(x, ids)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(layer.parameters())))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _model(tied: bool, impl: str) -> Transformer:
    cfg = presets.get("debug", "l3")
    l3 = replace(cfg.l3, tied=tied, d_emb=cfg.dim if tied else cfg.l3.d_emb, impl=impl)
    cfg = replace(cfg, l3=l3)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, cfg.vocab_size + 1)
    counts = (1 + rng.multinomial(l3.budget - cfg.vocab_size, p / p.sum())).astype(np.int64)
    torch.manual_seed(0)
    model = Transformer(cfg, l3_counts=dict.fromkeys(l3.positions, counts)).to(DEVICE).eval()
    with torch.no_grad():  # peaky softmaxes: a wrong row mapping in the compacted tables cannot hide
        for layer in l3_layers(model):
            layer.keys.mul_(30)
    return model


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_offloaded_triton_model_gives_the_on_device_logits(tied):
    model = _model(tied, "triton")
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    ids[0, :6] = ids[0, 0]  # repeated ids
    with torch.no_grad():
        on_device, _ = model(ids)
        handle = offload_l3_tables(model)
        offloaded, _ = model(ids)
        handle.remove()
    torch.testing.assert_close(offloaded, on_device, rtol=0, atol=0)
    sorted_model = _model(tied, "sorted")
    with torch.no_grad():
        sorted_logits, _ = sorted_model(ids)
    torch.testing.assert_close(on_device, sorted_logits, rtol=1e-4, atol=1e-4)
