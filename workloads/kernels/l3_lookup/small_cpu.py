"""CPU kernel of the L3 lookup for inference (numba): each distinct id's rows read once, in one fused pass.
Details: docs/workloads.md#workloadskernelsl3_lookupsmall_cpu."""

import threading
import types

import numpy as np
import torch

from workloads.kernels import numba_cache

try:  # optional: the GPU image has no numba; `supported` is then False and the torch paths run
    import numba
except ImportError:  # pragma: no cover - depends on the install
    numba = None
else:
    numba_cache.use(numba)  # before the first cached kernel below: one cache per version of the sources

prange = range if numba is None else numba.prange

# 64 rows of a dim-256 untied table are 96 KiB: an item's key rows and its partial sums stay in L2, and a
# 512-row token splits into 8 items, enough to keep both threads of a 2-core box busy at 1 position.
CHUNK_ROWS = 64
# Below this many rows (≈ 190 KiB at dim 256 untied) the serial build is faster than a parallel launch.
PARALLEL_MIN_ROWS = 128


def renamed(func, suffix: str):
    """A copy of `func` named `<name><suffix>`: numba's cache keys a file by the function's name, not its
    compile options, so a serial and a parallel build of one function need two names (else each loads
    the other's machine code)."""
    clone = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix, func.__defaults__)
    clone.__qualname__ = func.__qualname__ + suffix
    return clone


def _plan(ids, offsets, chunk):
    """Sorted order, and per work item: first/last sorted position of its group, its row range, and the
    first slot of its partials (one slot per query of the group)."""
    order = np.argsort(ids, kind="mergesort")
    n = ids.shape[0]
    n_items = 0
    a = 0
    while a < n:  # count items
        t = ids[order[a]]
        b = a + 1
        while b < n and ids[order[b]] == t:
            b += 1
        n_items += (offsets[t + 1] - offsets[t] + chunk - 1) // chunk
        a = b
    items = np.empty((n_items, 5), dtype=np.int64)  # g0, g1, r0, r1, slot
    k, slot, a = 0, 0, 0
    while a < n:
        t = ids[order[a]]
        b = a + 1
        while b < n and ids[order[b]] == t:
            b += 1
        for r0 in range(offsets[t], offsets[t + 1], chunk):
            items[k, 0], items[k, 1], items[k, 2] = a, b, r0
            items[k, 3], items[k, 4] = min(r0 + chunk, offsets[t + 1]), slot
            k += 1
            slot += b - a
        a = b
    return order, items, slot


def _partials(q, order, keys, values, items, part_m, part_l, part_acc):
    """For each item and each query of its group: max score m, Σ exp(s − m), Σ exp(s − m)·value row."""
    zero = part_acc.dtype.type(0)
    for k in prange(items.shape[0]):
        g0, g1, r0, r1, slot = items[k, 0], items[k, 1], items[k, 2], items[k, 3], items[k, 4]
        scores = np.empty((g1 - g0, r1 - r0), dtype=part_acc.dtype)  # (queries, rows) of this item
        for r in range(r0, r1):  # each key row read once, dotted with every query of the group
            for a in range(g0, g1):
                i = order[a]
                acc = zero
                for j in range(keys.shape[1]):
                    acc += keys[r, j] * q[i, j]
                scores[a - g0, r - r0] = acc
        for a in range(g1 - g0):
            m = scores[a].max()
            total = zero
            for r in range(r1 - r0):
                scores[a, r] = np.exp(scores[a, r] - m)
                total += scores[a, r]
            part_m[slot + a], part_l[slot + a] = m, total
            part_acc[slot + a] = zero
        for r in range(r0, r1):  # each value row read once
            for a in range(g1 - g0):
                w = scores[a, r - r0]
                for j in range(values.shape[1]):
                    part_acc[slot + a, j] += w * values[r, j]


def _merge(order, items, part_m, part_l, part_acc, out):
    """out[i] = Σ_k exp(m_k − M)·acc_k / Σ_k exp(m_k − M)·l_k over position i's items k (M = max m_k)."""
    n_items = items.shape[0]
    firsts = np.empty(n_items + 1, dtype=np.int64)  # the first item of each group, then n_items
    n_groups = 0
    for k in range(n_items):
        if k == 0 or items[k, 0] != items[k - 1, 0]:
            firsts[n_groups] = k
            n_groups += 1
    firsts[n_groups] = n_items
    for g in prange(n_groups):
        k0, k1 = firsts[g], firsts[g + 1]
        for a in range(items[k0, 1] - items[k0, 0]):
            i = order[items[k0, 0] + a]
            big = part_m[items[k0, 4] + a]
            for k in range(k0 + 1, k1):
                big = max(big, part_m[items[k, 4] + a])
            total = part_m.dtype.type(0)
            for k in range(k0, k1):
                total += np.exp(part_m[items[k, 4] + a] - big) * part_l[items[k, 4] + a]
            out[i] = 0
            for k in range(k0, k1):
                s = items[k, 4] + a
                scale = np.exp(part_m[s] - big) / total
                for j in range(out.shape[1]):
                    out[i, j] += scale * part_acc[s, j]


def _count_rows(ids, offsets):
    """Rows the call reads: Σ d_t over the distinct ids (decides serial or parallel)."""
    seen = set()
    rows = 0
    for i in range(ids.shape[0]):
        t = ids[i]
        if t not in seen:
            seen.add(t)
            rows += offsets[t + 1] - offsets[t]
    return rows


def _lookup_serial(q, ids, keys, values, offsets, out, chunk):
    order, items, n_slots = _plan_jit(ids, offsets, chunk)
    part_m, part_l = np.empty(n_slots, dtype=out.dtype), np.empty(n_slots, dtype=out.dtype)
    part_acc = np.empty((n_slots, out.shape[1]), dtype=out.dtype)
    _partials_serial(q, order, keys, values, items, part_m, part_l, part_acc)
    _merge_serial(order, items, part_m, part_l, part_acc, out)


def _lookup_parallel(q, ids, keys, values, offsets, out, chunk):
    """`_lookup_serial` with the items and the merge spread over numba's threads."""
    order, items, n_slots = _plan_jit(ids, offsets, chunk)
    part_m, part_l = np.empty(n_slots, dtype=out.dtype), np.empty(n_slots, dtype=out.dtype)
    part_acc = np.empty((n_slots, out.shape[1]), dtype=out.dtype)
    _partials_parallel(q, order, keys, values, items, part_m, part_l, part_acc)
    if items.shape[0] and items[0, 0] != items[-1, 0]:  # several distinct ids: their merges in parallel
        _merge_parallel(order, items, part_m, part_l, part_acc, out)
    else:  # one id (decode at batch 1): a parallel launch would have one group to spread
        _merge_serial(order, items, part_m, part_l, part_acc, out)


if numba is not None:
    _jit = {"cache": True, "nogil": True, "fastmath": True}
    _count_rows = numba.njit(cache=True)(_count_rows)
    _plan_jit = numba.njit(**_jit)(_plan)
    _partials_serial, _merge_serial = numba.njit(**_jit)(_partials), numba.njit(**_jit)(_merge)
    _partials_parallel = numba.njit(parallel=True, **_jit)(renamed(_partials, "_parallel"))
    _merge_parallel = numba.njit(parallel=True, **_jit)(renamed(_merge, "_parallel"))
    _lookup_serial = numba.njit(**_jit)(_lookup_serial)
    _lookup_parallel = numba.njit(**_jit)(_lookup_parallel)


def supported(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether this kernel can run the call: CPU, one float32/float64 dtype, no autocast, no grad."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or keys.requires_grad or values.requires_grad)
    return (
        numba is not None
        and not needs_grad
        and q.device.type == "cpu"
        and q.dtype == keys.dtype == values.dtype
        and q.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


_threads_set: dict[int, int] = {}  # thread ident -> the count `use_threads` last gave numba there


def use_threads(threads: int) -> None:
    """Give numba's parallel kernels `threads` threads (at most its pool) on this thread. numba keeps the
    count per calling thread; it is set only when it changes: at decode a set per call measured ~20 µs
    a call in the model, though under 1 µs in a loop."""
    n = min(threads, numba.config.NUMBA_NUM_THREADS)
    ident = threading.get_ident()
    if _threads_set.get(ident) != n:
        numba.set_num_threads(n)
        _threads_set[ident] = n


def l3_lookup_small_cpu(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
    out: torch.Tensor | None = None,  # (N, d_emb), written in place when given
    parallel: bool | None = None,  # None: parallel when torch has > 1 thread and the call reads enough rows
) -> torch.Tensor:  # (N, d_emb)
    """The lookup on CPU without autograd; callers check `supported` first."""
    if out is None:
        out = torch.empty(token_ids.shape[0], values.shape[1], dtype=q.dtype)
    ids_np, offsets_np = token_ids.contiguous().numpy(), offsets.contiguous().numpy()
    threads = torch.get_num_threads()
    if parallel is None:
        parallel = threads > 1 and _count_rows(ids_np, offsets_np) >= PARALLEL_MIN_ROWS
    run = _lookup_serial
    if parallel:
        use_threads(threads)
        run = _lookup_parallel
    q_np, keys_np = q.detach().contiguous().numpy(), keys.detach().contiguous().numpy()
    values_np = keys_np if values is keys else values.detach().contiguous().numpy()
    run(q_np, ids_np, keys_np, values_np, offsets_np, out.numpy(), CHUNK_ROWS)
    return out
