"""L3Layer.serve: the fused CPU kernel's tables built once and kept, with no per-call storage checks; the
served output equals the torch path on every form and shape, and each condition the kept tables rest on
(no grad, no autocast, no table source, x's dtype, `_apply`) sends the call elsewhere or rebuilds them."""

import pytest
import torch

from workloads.kernels.l3_lookup import small_cpu, sublayer_cpu
from workloads.l3.layer import L3Layer
from workloads.l3.offload import offload_l3_tables

pytestmark = pytest.mark.skipif(small_cpu.numba is None, reason="numba is not installed")

COUNTS = [3, 70, 2, 1, 9]


def _layer(tied: bool, residual: bool, seed: int = 0) -> L3Layer:
    torch.manual_seed(seed)
    layer = L3Layer(16, COUNTS, 16 if tied else 8, 24, tied=tied, residual=residual).eval()
    with torch.no_grad():  # every weight non-trivial (mix starts at zero in the residual form)
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) + (p.dim() == 1))
    return layer


def _reference(layer: L3Layer, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    impl, serving = layer.impl, layer.serving
    layer.impl, layer.serving = "reference", False
    try:
        return layer(x, ids)
    finally:
        layer.impl, layer.serving = impl, serving


def _counting_builds(monkeypatch) -> list:
    built = []
    static_arrays = sublayer_cpu.static_arrays
    monkeypatch.setattr(sublayer_cpu, "static_arrays", lambda *a: built.append(1) or static_arrays(*a))
    return built


@pytest.mark.parametrize("form", ["replace", "residual", "tied"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (2, 4), (8, 1), (1, 8)])
def test_served_output_equals_the_torch_path_and_the_tables_are_built_once(form, shape, monkeypatch):
    layer = _layer(form == "tied", form == "residual").serve()
    built = _counting_builds(monkeypatch)
    g = torch.Generator().manual_seed(sum(shape))
    with torch.no_grad():
        for _ in range(3):
            ids = torch.randint(0, len(COUNTS), shape, generator=g)
            x = torch.randn(*shape, 16, generator=g)
            got = layer(x, ids)
            assert got.shape == x.shape and got.is_contiguous()
            torch.testing.assert_close(got, _reference(layer, x, ids), rtol=1e-5, atol=1e-5)
    assert len(built) == 1


def test_each_served_call_returns_its_own_tensor():
    layer = _layer(False, True).serve()
    ids = torch.tensor([[1]])
    with torch.no_grad():
        first = layer(torch.ones(1, 1, 16), ids)
        kept = first.clone()
        layer(2 * torch.ones(1, 1, 16), ids)
    assert torch.equal(first, kept)  # a second call does not write into the first call's output


def test_served_tables_follow_in_place_updates_and_are_rebuilt_after_apply_and_serve(monkeypatch):
    layer = _layer(False, False).serve()
    built = _counting_builds(monkeypatch)
    ids, x = torch.tensor([[1, 4]]), torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer(x, ids)
        layer.mix.weight.mul_(-2.0)  # in place: the kept views see it
        layer.values[3:70].add_(1.0)
        torch.testing.assert_close(layer(x, ids), _reference(layer, x, ids), rtol=1e-5, atol=1e-5)
        assert len(built) == 1
        layer.share_memory()  # `_apply`: every storage moves (same dtype); updates go to the new ones
        layer.mix.weight.mul_(0.5)
        torch.testing.assert_close(layer(x, ids), _reference(layer, x, ids), rtol=1e-5, atol=1e-5)
        assert len(built) == 2
        layer.double()  # `_apply`: new storages, another dtype
        got = layer(x.double(), ids)
        assert got.dtype == torch.float64 and len(built) == 3
        torch.testing.assert_close(got, _reference(layer, x.double(), ids), rtol=1e-10, atol=1e-10)
        layer.up.weight.data = layer.up.weight.data * 3.0  # a new storage: followed once served again
        layer.serve()
        torch.testing.assert_close(layer(x.double(), ids), _reference(layer, x.double(), ids))
        assert len(built) == 4


def test_grad_autocast_many_positions_and_an_explicit_impl_leave_the_served_path(monkeypatch):
    layer = _layer(False, False).serve()
    ran = []
    fused = sublayer_cpu.run
    monkeypatch.setattr(sublayer_cpu, "run", lambda *a, **k: ran.append(1) or fused(*a, **k))
    looked = []  # the kept tables are looked up (`_fused_tables`) once, then served with no lookup
    fused_tables = L3Layer._fused_tables
    monkeypatch.setattr(L3Layer, "_fused_tables", lambda *a: looked.append(1) or fused_tables(*a))
    ids, x = torch.tensor([[1, 0]]), torch.randn(1, 2, 16)
    out = layer(x, ids)  # grad on: the autograd path, the weights get gradients
    out.sum().backward()
    assert ran == [] and layer.up.weight.grad is not None
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x, ids)
        many = torch.ones(1, sublayer_cpu.MAX_POSITIONS + 1, dtype=torch.int64)
        layer(torch.randn(1, many.shape[1], 16), many)
        layer.impl = "small"
        layer(x, ids)
        assert ran == []
        layer.impl, looked[:] = "auto", []
        layer(x, ids)
        layer(x, ids)
        assert ran == [1, 1] and looked == [1]  # none of the calls above kept "no tables" for serving


def test_an_offload_sends_calls_to_its_source_and_its_removal_rebuilds_the_tables(monkeypatch):
    layer = _layer(False, False).serve()
    model = torch.nn.ModuleList([layer])
    built = _counting_builds(monkeypatch)
    ids, x = torch.tensor([[2, 1]]), torch.randn(1, 2, 16)
    with torch.no_grad():
        want = layer(x, ids)
        handle = offload_l3_tables(model, compact=True)  # rows gathered per call by the table source
        try:
            asked, source = [], layer.table_source
            layer.table_source = lambda t: asked.append(1) or source(t)
            handle.prefetch(ids)
            torch.testing.assert_close(layer(x, ids), want, rtol=1e-5, atol=1e-5)
            assert asked == [1]  # the source served this call, not the kept tables
        finally:
            handle.remove()
        torch.testing.assert_close(layer(x, ids), want, rtol=1e-5, atol=1e-5)
    assert len(built) == 3  # served, the source's slices, served again after removal


def test_checks_still_run_while_serving_unless_turned_off():
    layer = _layer(False, False).serve()
    with torch.no_grad(), pytest.raises(ValueError, match="token_ids must have shape"):
        layer(torch.randn(1, 2, 16), torch.tensor([[1]]))
    trusting = L3Layer(16, COUNTS, 8, 24, check_inputs=False).eval().serve()
    with torch.no_grad():
        assert trusting(torch.randn(1, 1, 16), torch.tensor([[4]])).shape == (1, 1, 16)


def test_narrow_integer_ids_are_widened_before_the_kernel():
    """uint8 / int32 ids give the int64 result and reach the kernel as int64: no numba build per id dtype
    (each is a multi-second compile)."""
    layer = _layer(False, False).serve()
    x = torch.randn(1, 2, 16)
    with torch.no_grad():
        want = layer(x, torch.tensor([[1, 4]]))
        for dtype in (torch.uint8, torch.int32):
            assert torch.equal(layer(x, torch.tensor([[1, 4]], dtype=dtype)), want)
    for kernel in (sublayer_cpu._serial, sublayer_cpu._parallel):
        assert all(str(sig[1].dtype) == "int64" for sig in kernel.signatures)
