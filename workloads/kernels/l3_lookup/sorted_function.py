"""Forward and hand-written backward of the sorted L3 lookup over its padded bin layout (see sorted.py).
Details: docs/workloads.md#workloadskernelsl3_lookupsorted_function."""

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable


class _Plan(NamedTuple):
    """Padded layout of all groups, bin after bin; a bin of G groups is (G, n_max) × (G, d_max).

    Sq = Σ_bins G·n_max query slots and Sr = Σ_bins G·d_max row slots; padding slots repeat a valid
    index of their group (so every gather is in range) and are masked (rows) or never read (queries).
    """

    pos: torch.Tensor  # (Sq,) original position of each query slot
    r_idx: torch.Tensor  # (Sr,) table row of each row slot
    r_padding: torch.Tensor  # (Sr,) bool, True at padding row slots (masked)
    slot: torch.Tensor  # (N,) query slot of each original position
    bins: list[tuple[int, int, int]]  # (G, n_max, d_max) per bin
    q_slices: list[slice]  # each bin's query slots, G·n_max of them
    r_slices: list[slice]  # each bin's row slots, G·d_max of them
    row_padded: list[bool]  # whether a bin has any padded row slot (else the mask is skipped)


def compute_dtype(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.dtype:
    """The dtype the matmuls run in: autocast's, as the plain ops would get it (fp64 is never cast)."""
    dtype = torch.promote_types(torch.promote_types(q.dtype, keys.dtype), values.dtype)
    device = q.device.type
    if torch.is_autocast_enabled(device) and dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return dtype


def _bin_weights(qb: torch.Tensor, kb: torch.Tensor, r_padding: torch.Tensor | None) -> torch.Tensor:
    """Masked softmax weights of one bin, (G, n_max, d_max), in at least fp32 (bf16/fp16 scores lose
    the tail); padded rows (r_padding True) get exactly 0."""
    scores = torch.bmm(qb, kb.transpose(1, 2))  # (G, n_max, d_max)
    if r_padding is not None:
        scores.masked_fill_(r_padding.view(kb.shape[0], 1, kb.shape[1]), float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


def lookup_forward(
    q: torch.Tensor,  # (N, dim)
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb); may be `keys` itself (tied)
    plan: _Plan,
    keep: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(output (N, d_emb), what backward needs: q_pad, then per bin its key rows, value rows (untied
    only) and softmax weights; empty unless keep)."""
    dtype, tied = compute_dtype(q, keys, values), values is keys
    # Dtypes are now explicit; autocast off so the `out=` matmuls keep them.
    with torch.autocast(q.device.type, enabled=False):
        return _forward(q, keys, values, plan, keep, dtype, tied)


def _forward(q, keys, values, plan: _Plan, keep: bool, dtype: torch.dtype, tied: bool):
    q_pad = q.index_select(0, plan.pos).to(dtype)  # (Sq, dim)
    o_pad = q_pad.new_empty(q_pad.shape[0], values.shape[1])  # (Sq, d_emb)
    saved = [q_pad]
    bins = zip(plan.bins, plan.q_slices, plan.r_slices, plan.row_padded, strict=True)
    for (G, n, d), qs, rs, padded in bins:
        # Rows are gathered per bin, not into one (Sr, dim) buffer: at the bench size that buffer is
        # ~38 MB, past glibc's 32 MB mmap threshold, and its fresh pages fault in on every step (~20 ms
        # on the 2-core CPU); per-bin pieces are small and reuse heap memory.
        kb = keys.index_select(0, plan.r_idx[rs]).to(dtype).view(G, d, -1)  # (G, d, dim)
        vb = kb if tied else values.index_select(0, plan.r_idx[rs]).to(dtype).view(G, d, -1)  # (G, d, d_emb)
        mask = plan.r_padding[rs] if padded else None  # (G * d,)
        w = _bin_weights(q_pad[qs].view(G, n, -1), kb, mask)  # (G, n, d)
        torch.bmm(w.to(dtype), vb, out=o_pad[qs].view(G, n, -1))
        if keep:
            saved += [kb, w] if tied else [kb, vb, w]
    # Each original position reads its own (valid) padded slot.
    out = o_pad.index_select(0, plan.slot)  # (N, d_emb)
    return out, (tuple(saved) if keep else ())


class SortedLookup(torch.autograd.Function):
    """softmax(K_t q)ᵀ V_t over a precomputed plan; `values is keys` means tied tables (one gradient)."""

    @staticmethod
    def forward(ctx, q, keys, values, plan, sparse_grad=False):
        out, saved = lookup_forward(q, keys, values, plan, keep=True)
        ctx.save_for_backward(*saved)
        ctx.plan, ctx.tied, ctx.device, ctx.sparse = plan, values is keys, q.device.type, sparse_grad
        ctx.tables = (keys.shape[0], keys.dtype, values.shape[1], values.dtype)
        ctx.q_dtype = q.dtype
        return out

    @staticmethod
    @once_differentiable  # double backward raises instead of returning wrong (zero) second derivatives
    def backward(ctx, grad_out):  # grad_out: (N, d_emb)
        q_pad, *per_bin = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        if ctx.tied:
            need_k = need_v = need_k or need_v
        step = 2 if ctx.tied else 3
        bins = [(b[0], b[0], b[1]) if ctx.tied else tuple(b) for b in _chunks(per_bin, step)]
        with torch.autocast(ctx.device, enabled=False):
            dq, dk, dv = _grads(ctx, grad_out, q_pad, bins, (need_q, need_k, need_v))
        return dq, dk, dv, None, None


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _grads(ctx, grad_out, q_pad, bins, needs):
    """dq (N, dim), dkeys (v, dim), dvalues (v, d_emb), each None unless needed; tied: dvalues goes into
    dkeys. Per bin the gradients of its slots are computed, then index_add-ed into the tables: each valid
    slot is a distinct row, and padded slots add exact zeros (masked rows have weight 0)."""
    need_q, need_k, need_v = needs
    plan, tied = ctx.plan, ctx.tied
    n_rows, k_dtype, d_emb, v_dtype = ctx.tables
    dtype = q_pad.dtype
    # Padded query slots get zero grad_out, so they contribute exact zeros to every gradient.
    g_pad = grad_out.new_zeros(q_pad.shape[0], d_emb, dtype=dtype)  # (Sq, d_emb)
    g_pad.index_copy_(0, plan.slot, grad_out.to(dtype))
    dq_pad = torch.empty_like(q_pad) if need_q else None  # (Sq, dim)
    dim = q_pad.shape[1]
    device, sparse, n_slots = grad_out.device, ctx.sparse, plan.r_idx.shape[0]
    dk = _TableGrad(n_rows, dim, k_dtype, dtype, device, sparse, n_slots) if need_k else None
    dv = _TableGrad(n_rows, d_emb, v_dtype, dtype, device, sparse, n_slots) if need_v and not tied else None
    for (G, n, d), qs, rs, (kb, vb, w) in zip(plan.bins, plan.q_slices, plan.r_slices, bins, strict=True):
        gb = g_pad[qs].view(G, n, -1)  # (G, n, d_emb); w: (G, n, d) in fp32 or fp64
        dkb = None
        if need_q or need_k:
            dw = torch.bmm(gb, vb.transpose(1, 2)).to(w.dtype)  # (G, n, d)
            ds = dw.sub_((dw * w).sum(-1, keepdim=True)).mul_(w).to(dtype)  # masked rows: w = 0 -> 0
            if need_q:
                torch.bmm(ds, kb, out=dq_pad[qs].view(G, n, -1))
            if need_k:  # (G, d, dim)
                dkb = torch.bmm(ds.transpose(1, 2), q_pad[qs].view(G, n, -1), out=dk.slots(rs, G, d))
        if need_v:
            wt = w.to(dtype).transpose(1, 2)  # (G, d, n)
            if tied:  # keys and values share rows: dV adds to dK
                dkb = dkb.baddbmm_(wt, gb)
            else:
                dv.add(plan.r_idx[rs], torch.bmm(wt, gb, out=dv.slots(rs, G, d)))
        if dkb is not None:
            dk.add(plan.r_idx[rs], dkb)
    dq = dq_pad.index_select(0, plan.slot).to(ctx.q_dtype) if need_q else None
    dk = None if dk is None else dk.result(plan.r_idx)
    return dq, dk, None if dv is None else dv.result(plan.r_idx)


class _TableGrad:
    """A table's gradient, bin by bin: `index_add_` into a zeroed dense (rows, width) tensor, or (sparse)
    the gradient rows of all Sr row slots, which the bins' matmuls write in place (`slots`), made one
    sparse COO tensor over the slots' table rows (a copy only where the table's dtype differs)."""

    def __init__(self, n_rows, width, dtype, compute_dtype, device, sparse: bool, n_slots: int):
        self.shape, self.dtype, self.sparse = (n_rows, width), dtype, sparse
        self.dense = None if sparse else torch.zeros(n_rows, width, dtype=dtype, device=device)
        self.buffer = torch.empty(n_slots, width, dtype=compute_dtype, device=device) if sparse else None
        self.rows: torch.Tensor | None = None

    def slots(self, rs: slice, G: int, d: int) -> torch.Tensor | None:
        """Where one bin's (G, d, width) gradient rows go (sparse), else None (a new tensor)."""
        return None if self.buffer is None else self.buffer[rs].view(G, d, -1)

    def add(self, rows: torch.Tensor, grad: torch.Tensor) -> None:  # (G·d,), (G, d, width)
        if not self.sparse:
            self.dense.index_add_(0, rows, grad.flatten(0, 1).to(self.dtype))

    def result(self, rows: torch.Tensor) -> torch.Tensor:  # rows: (Sr,) every slot's table row
        if not self.sparse:
            return self.dense
        values = self.buffer.to(self.dtype)
        return torch.sparse_coo_tensor(rows.unsqueeze(0), values, self.shape, check_invariants=False)
