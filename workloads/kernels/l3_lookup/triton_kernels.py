"""Triton kernels of the L3 lookup (L3_SPEC §1, §3): `softmax(K_t q)ᵀ V_t` per position, and its backward.
Details: docs/workloads.md#workloadskernelsl3_lookuptriton_kernels."""

import triton
import triton.language as tl


@triton.jit
def _load_rows(ptr, rows, row_mask, cols, col_mask, stride):
    """A (BLOCK_R, BLOCK_C) tile of table rows `rows`, in fp32; masked entries read as 0."""
    offs = rows[:, None].to(tl.int64) * stride + cols[None, :]
    return tl.load(ptr + offs, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def lookup_fwd_kernel(
    q_ptr, ids_ptr, keys_ptr, values_ptr, offsets_ptr, out_ptr, lse_ptr,
    DIM, EMB,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    i = tl.program_id(0).to(tl.int64)
    t = tl.load(ids_ptr + i).to(tl.int64)
    row_start = tl.load(offsets_ptr + t)
    row_end = tl.load(offsets_ptr + t + 1)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_E)
    q = tl.load(q_ptr + i * DIM + d, mask=d < DIM, other=0.0).to(tl.float32)  # (BLOCK_D,)
    m = tl.full((), float("-inf"), tl.float32)
    l_sum = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_E,), tl.float32)
    for r0 in range(row_start, row_end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        in_range = rows < row_end
        k = _load_rows(keys_ptr, rows, in_range, d, d < DIM, DIM)  # (BLOCK_R, BLOCK_D)
        s = tl.sum(k * q[None, :], axis=1)  # (BLOCK_R,) scores
        s = tl.where(in_range, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: every tile holds ≥ 1 real row
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)  # (BLOCK_R,); 0 at rows past the token's range
        v = _load_rows(values_ptr, rows, in_range, e, e < EMB, EMB)  # (BLOCK_R, BLOCK_E)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l_sum = l_sum * alpha + tl.sum(p, axis=0)
        m = m_new
    tl.store(out_ptr + i * EMB + e, (acc / l_sum).to(out_ptr.dtype.element_ty), mask=e < EMB)
    tl.store(lse_ptr + i, m + tl.log(l_sum))


@triton.jit
def lookup_bwd_dq_kernel(
    q_ptr, ids_ptr, keys_ptr, values_ptr, offsets_ptr, g_ptr, lse_ptr, delta_ptr, dq_ptr,
    DIM, EMB,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    i = tl.program_id(0).to(tl.int64)
    t = tl.load(ids_ptr + i).to(tl.int64)
    row_start = tl.load(offsets_ptr + t)
    row_end = tl.load(offsets_ptr + t + 1)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_E)
    q = tl.load(q_ptr + i * DIM + d, mask=d < DIM, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + i * EMB + e, mask=e < EMB, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + i)
    delta = tl.load(delta_ptr + i)
    dq = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(row_start, row_end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        in_range = rows < row_end
        k = _load_rows(keys_ptr, rows, in_range, d, d < DIM, DIM)
        v = _load_rows(values_ptr, rows, in_range, e, e < EMB, EMB)
        w = tl.where(in_range, tl.exp(tl.sum(k * q[None, :], axis=1) - lse), 0.0)  # (BLOCK_R,)
        ds = w * (tl.sum(v * g[None, :], axis=1) - delta)  # (BLOCK_R,)
        dq += tl.sum(ds[:, None] * k, axis=0)
    tl.store(dq_ptr + i * DIM + d, dq.to(dq_ptr.dtype.element_ty), mask=d < DIM)


@triton.jit
def _row_tile_grads(q_ptr, g_ptr, lse_ptr, delta_ptr, pos, k, v, in_range, d, e, DIM, EMB):
    """One position's contributions to a tile of rows: (ds (BLOCK_R,), w (BLOCK_R,), q, g)."""
    q = tl.load(q_ptr + pos * DIM + d, mask=d < DIM, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + pos * EMB + e, mask=e < EMB, other=0.0).to(tl.float32)
    w = tl.where(in_range, tl.exp(tl.sum(k * q[None, :], axis=1) - tl.load(lse_ptr + pos)), 0.0)
    ds = w * (tl.sum(v * g[None, :], axis=1) - tl.load(delta_ptr + pos))
    return ds, w, q, g


@triton.jit
def lookup_bwd_tables_kernel(
    q_ptr, sorted_ids_ptr, perm_ptr, group_end_ptr, keys_ptr, values_ptr, offsets_ptr,
    g_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    N, DIM, EMB,
    TIED: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Deterministic: program (i, j) owns row tiles j, j + SPLIT, ... of the token whose group of
    equal ids starts at sorted position i; programs at non-leading positions do nothing."""
    i = tl.program_id(0).to(tl.int64)
    lane = tl.program_id(1).to(tl.int64)
    t = tl.load(sorted_ids_ptr + i).to(tl.int64)
    prev = tl.load(sorted_ids_ptr + tl.maximum(i - 1, 0)).to(tl.int64)
    leader = (i == 0) | (prev != t)
    group_end = tl.load(group_end_ptr + i)
    row_start = tl.load(offsets_ptr + t)
    row_end = tl.load(offsets_ptr + t + 1)
    n_tiles = tl.where(leader, tl.cdiv(row_end - row_start, BLOCK_R), 0)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_E)
    for tile in range(lane, n_tiles, SPLIT):
        rows = row_start + tile * BLOCK_R + tl.arange(0, BLOCK_R)
        in_range = rows < row_end
        k = _load_rows(keys_ptr, rows, in_range, d, d < DIM, DIM)  # (BLOCK_R, BLOCK_D)
        v = _load_rows(values_ptr, rows, in_range, e, e < EMB, EMB)  # (BLOCK_R, BLOCK_E)
        dk = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
        dv = tl.zeros((BLOCK_R, BLOCK_E), tl.float32)
        for s in range(i, group_end):
            pos = tl.load(perm_ptr + s).to(tl.int64)
            ds, w, q, g = _row_tile_grads(
                q_ptr, g_ptr, lse_ptr, delta_ptr, pos, k, v, in_range, d, e, DIM, EMB
            )
            dk += ds[:, None] * q[None, :]
            dv += w[:, None] * g[None, :]
        if TIED:  # one table: dV adds to dK (EMB == DIM, BLOCK_E == BLOCK_D)
            dk += dv
        offs_k = rows[:, None].to(tl.int64) * DIM + d[None, :]
        tl.store(dk_ptr + offs_k, dk.to(dk_ptr.dtype.element_ty), mask=in_range[:, None] & (d < DIM)[None, :])
        if not TIED:
            offs_v = rows[:, None].to(tl.int64) * EMB + e[None, :]
            mask_v = in_range[:, None] & (e < EMB)[None, :]
            tl.store(dv_ptr + offs_v, dv.to(dv_ptr.dtype.element_ty), mask=mask_v)


@triton.jit
def lookup_bwd_tables_atomic_kernel(
    q_ptr, ids_ptr, keys_ptr, values_ptr, offsets_ptr, g_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    DIM, EMB,
    TIED: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Non-deterministic: program (i, j) adds position i's contributions to row tiles j, j + SPLIT, ...
    of its token into fp32 gradients with atomics (the order of the adds varies between runs)."""
    i = tl.program_id(0).to(tl.int64)
    lane = tl.program_id(1).to(tl.int64)
    t = tl.load(ids_ptr + i).to(tl.int64)
    row_start = tl.load(offsets_ptr + t)
    row_end = tl.load(offsets_ptr + t + 1)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_E)
    for tile in range(lane, tl.cdiv(row_end - row_start, BLOCK_R), SPLIT):
        rows = row_start + tile * BLOCK_R + tl.arange(0, BLOCK_R)
        in_range = rows < row_end
        k = _load_rows(keys_ptr, rows, in_range, d, d < DIM, DIM)
        v = _load_rows(values_ptr, rows, in_range, e, e < EMB, EMB)
        ds, w, q, g = _row_tile_grads(q_ptr, g_ptr, lse_ptr, delta_ptr, i, k, v, in_range, d, e, DIM, EMB)
        offs_k = rows[:, None].to(tl.int64) * DIM + d[None, :]
        mask_k = in_range[:, None] & (d < DIM)[None, :]
        offs_v = rows[:, None].to(tl.int64) * EMB + e[None, :]
        mask_v = in_range[:, None] & (e < EMB)[None, :]
        tl.atomic_add(dk_ptr + offs_k, ds[:, None] * q[None, :], mask=mask_k)
        if TIED:
            tl.atomic_add(dk_ptr + offs_v, w[:, None] * g[None, :], mask=mask_v)
        else:
            tl.atomic_add(dv_ptr + offs_v, w[:, None] * g[None, :], mask=mask_v)
