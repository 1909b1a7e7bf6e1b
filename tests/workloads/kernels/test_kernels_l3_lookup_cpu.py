"""The numba CPU kernels (inference): the lookup (small_cpu, serial and parallel builds) equals the
per-position reference, and the fused sublayer (sublayer_cpu) equals L3Layer's torch path, on named,
ragged, chunk-edge and random shapes; the layer takes the fused path only when it may."""

import threading

import numpy as np
import pytest
import torch

from workloads.kernels.l3_lookup import small_cpu, sublayer_cpu
from workloads.kernels.l3_lookup.op import l3_lookup
from workloads.l3.layer import L3Layer

pytestmark = pytest.mark.skipif(small_cpu.numba is None, reason="numba is not installed")

C = small_cpu.CHUNK_ROWS
SHAPES = {
    # counts per token, ids of the positions
    "ragged": ([3, 1, 7, 2, 5], [0, 2, 2, 4, 1, 3, 2, 0]),
    "one_row": ([1], [0]),
    "one_row_each_duplicates": ([1, 1, 1], [2, 2, 0, 2]),
    "cap_one": ([1] * 9, [8, 0, 3, 3, 7]),
    "cap_row_token_many_chunks": ([1, 512, 3], [1, 0, 1, 2, 1]),
    "chunk_edges": ([C - 1, C, C + 1, 2 * C, 2 * C + 1], [4, 3, 2, 1, 0, 0, 4]),
    "all_same_id": ([2, 3 * C + 5], [1] * 13),
    "no_positions": ([4, 2], []),
}


def _tables(counts, dim, d_emb, dtype, seed, tied=False):
    g = torch.Generator().manual_seed(seed)
    v = sum(counts)
    # Scale 2 makes the softmax peaked, so a wrong row or a wrong max shows in the output.
    keys = 2 * torch.randn(v, dim, generator=g, dtype=dtype)
    values = keys if tied else torch.randn(v, d_emb, generator=g, dtype=dtype)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.tensor(counts).cumsum(0)])
    return keys, values, offsets


def _random_shapes(n_cases=12):
    rng = np.random.default_rng(7)
    for k in range(n_cases):
        vocab = int(rng.integers(1, 9))
        counts = rng.integers(1, 3 * C, size=vocab).tolist()
        ids = rng.integers(0, vocab, size=int(rng.integers(1, 40))).tolist()
        yield f"random{k}", (counts, ids)


ALL_SHAPES = SHAPES | dict(_random_shapes())


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", sorted(ALL_SHAPES))
def test_lookup_kernel_equals_the_reference(name, tied, parallel):
    counts, ids = ALL_SHAPES[name]
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        keys, values, offsets = _tables(counts, 8, 8 if tied else 5, dtype, seed=len(name), tied=tied)
        q = torch.randn(len(ids), 8, generator=torch.Generator().manual_seed(1), dtype=dtype)
        t = torch.tensor(ids, dtype=torch.int64)
        want = l3_lookup(q, t, keys, values, offsets, "reference")
        got = small_cpu.l3_lookup_small_cpu(q, t, keys, values, offsets, parallel=parallel)
        assert got.dtype == dtype and got.shape == (len(ids), values.shape[1])
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_lookup_kernel_hand_worked_case():
    """Token 0 owns rows 0..2 (keys e0, e1, 0; values 1, 2, 3); q = (ln 2, 0) gives scores (ln 2, 0, 0),
    weights (1/2, 1/4, 1/4), output 1/2 + 2/4 + 3/4 = 1.75. Token 1's single row gives its value, 5."""
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    values = torch.tensor([[1.0], [2.0], [3.0], [5.0]], dtype=torch.float64)
    offsets = torch.tensor([0, 3, 4])
    q = torch.tensor([[np.log(2), 0.0], [1.0, 1.0], [np.log(2), 0.0]], dtype=torch.float64)
    for parallel in (False, True):
        got = small_cpu.l3_lookup_small_cpu(
            q, torch.tensor([0, 1, 0]), keys, values, offsets, parallel=parallel
        )
        torch.testing.assert_close(got, torch.tensor([[1.75], [5.0], [1.75]], dtype=torch.float64))


def test_serial_and_parallel_builds_have_their_own_cache_names():
    """numba caches by function name: a shared name made one build load the other's code (a segfault)."""
    builds = (small_cpu._partials_serial, small_cpu._partials_parallel, small_cpu._merge_serial,
              small_cpu._merge_parallel, sublayer_cpu._gemv_serial, sublayer_cpu._gemv_parallel)  # fmt: skip
    names = {f.py_func.__qualname__ for f in builds}
    assert len(names) == 6


def _layer(counts, dim, d_emb, tied, residual, seed):
    torch.manual_seed(seed)
    layer = L3Layer(dim, counts, dim if tied else d_emb, 24, tied=tied, residual=residual).eval()
    with torch.no_grad():  # non-trivial norms and tables, so every weight matters
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * (2.0 if p.dim() == 2 and p.shape[0] > 24 else 0.5) + (p.dim() == 1))
    return layer


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("form", ["replace", "residual", "tied"])
@pytest.mark.parametrize("name", ["ragged", "one_row", "cap_row_token_many_chunks", "chunk_edges",
                                  "all_same_id", "random3", "random8"])  # fmt: skip
def test_fused_sublayer_equals_the_layers_torch_path(name, form, parallel):
    counts, ids = ALL_SHAPES[name]
    ids = ids[: sublayer_cpu.MAX_POSITIONS]
    layer = _layer(counts, 16, 8, form == "tied", form == "residual", seed=len(name))
    t = torch.tensor(ids).view(1, -1)
    x = torch.randn(1, len(ids), 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        layer.impl = "reference"
        want = layer(x, t)
        got = sublayer_cpu.l3_sublayer_cpu(x.view(-1, 16), t.view(-1), layer.keys, layer.value_table,
                                           layer.offsets, layer.norm_in, layer.up.weight, layer.norm_out,
                                           layer.mix.weight, layer.residual, parallel=parallel)  # fmt: skip
    torch.testing.assert_close(got.view_as(want), want, rtol=1e-5, atol=1e-5)


def test_layer_runs_the_fused_kernel_only_for_cpu_inference_at_few_positions(monkeypatch):
    layer = _layer([3, 70, 2], 16, 8, False, False, seed=0)
    calls = []
    fused = sublayer_cpu.run
    monkeypatch.setattr(sublayer_cpu, "run", lambda *a, **k: calls.append(1) or fused(*a, **k))
    few = torch.tensor([[1, 0, 1]])
    many = torch.ones(1, sublayer_cpu.MAX_POSITIONS + 1, dtype=torch.int64)
    with torch.no_grad():
        fused_out = layer(torch.ones(1, 3, 16), few)
        assert len(calls) == 1
        layer(torch.ones(1, many.shape[1], 16), many)  # too many positions: the torch path
        assert len(calls) == 1
        layer.impl = "small"  # an explicit impl is honoured: the torch path with that lookup
        torch.testing.assert_close(layer(torch.ones(1, 3, 16), few), fused_out, rtol=1e-5, atol=1e-5)
        assert len(calls) == 1
    layer.impl = "auto"
    out = layer(torch.ones(1, 3, 16), few)  # grad enabled: the autograd path, gradients reach the tables
    out.sum().backward()
    assert len(calls) == 1 and layer.keys.grad is not None and layer.keys.grad.abs().sum() > 0
    layer.keys.requires_grad_(False)  # frozen tables, trained dense weights: still the autograd path
    layer.values.requires_grad_(False)
    layer.up.weight.grad = None
    layer(torch.ones(1, 3, 16), few).sum().backward()
    assert len(calls) == 1 and layer.up.weight.grad is not None


def test_kept_fused_tables_follow_in_place_updates_new_storage_dtype_and_autocast(monkeypatch):
    layer = _layer([3, 70, 2], 16, 8, False, True, seed=1)
    ids, x = torch.tensor([[1, 0, 1]]), torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(0))

    def both() -> tuple[torch.Tensor, torch.Tensor]:  # (the fused kernel's output, the torch path's)
        layer.impl = "auto"
        got = layer(x.to(layer.keys.dtype), ids)
        layer.impl = "reference"
        return got, layer(x.to(layer.keys.dtype), ids)

    built = []
    static_arrays = sublayer_cpu.static_arrays
    monkeypatch.setattr(sublayer_cpu, "static_arrays", lambda *a: built.append(1) or static_arrays(*a))
    with torch.no_grad():
        torch.testing.assert_close(*both(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(*both(), rtol=1e-5, atol=1e-5)
        assert len(built) == 1  # kept for the next call
        layer.mix.weight.mul_(-2.0)  # in place: the kept views see it
        layer.values[70:73].add_(1.0)
        got, want = both()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert len(built) == 1
        layer.up.weight.data = layer.up.weight.data * 3.0  # new storage: built again
        torch.testing.assert_close(*both(), rtol=1e-5, atol=1e-5)
        assert len(built) == 2
        layer.double()  # another dtype (and storage)
        got, want = both()
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert len(built) == 3
        layer.impl = "auto"
        ran = []
        fused = sublayer_cpu.run
        monkeypatch.setattr(sublayer_cpu, "run", lambda *a, **k: ran.append(1) or fused(*a, **k))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the kernel does not autocast: the torch path
            layer(x.double(), ids)
        assert ran == [] and len(built) == 3
        layer(x.double(), ids)  # autocast off again: the kernel (one entry is kept: built again)
        assert ran == [1] and len(built) == 4


def test_use_threads_sets_numbas_count_per_calling_thread():
    pool = small_cpu.numba.config.NUMBA_NUM_THREADS
    small_cpu.use_threads(pool + 5)  # capped at numba's pool
    assert small_cpu.numba.get_num_threads() == pool
    small_cpu.use_threads(1)
    assert small_cpu.numba.get_num_threads() == 1
    seen = []  # numba keeps the count per thread: a new thread, at numba's default, gets it set too

    def in_worker() -> None:
        small_cpu.use_threads(1)
        seen.append(small_cpu.numba.get_num_threads())

    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join()
    assert seen == [1] and small_cpu.numba.get_num_threads() == 1


def test_kept_fused_tables_are_built_again_for_another_slice_of_the_same_buffer():
    # A table source may hand out slices of one buffer (the prefetch ring): the same data pointer, fewer
    # rows. The kept tables must not outlive the shape they were built for.
    layer = _layer([3, 70, 2], 16, 8, False, False, seed=2)
    x = torch.randn(1, 1, 16)
    full = layer.lookup_tables(torch.tensor([[0]]))
    short = full._replace(keys=full.keys[:3], values=full.values[:3], offsets=full.offsets[:2])
    with torch.no_grad():
        first = layer._fused_tables(x, full)
        second = layer._fused_tables(x, short)
    assert first[0].shape == (75, 16) and second[0].shape == (3, 16) and second[1].shape == (3, 8)
