"""CPU kernel of the small-batch L3 lookup (numba): one pass over each position's own table rows.

Inference only (no autograd): for position i with token t, scores over t's rows, a max-shifted softmax
and the weighted sum of t's value rows, all in registers and one (d_t,) scratch vector; nothing the size
of the gathered rows is ever materialized. Each table row a position needs is read once per occurrence
(no dedup), so the work is Σ_i d_i rows: the right trade for a handful of positions, where the torch
paths pay more in op dispatch and in copying gathered rows than in arithmetic. `nogil` lets the offload
prefetch thread run beside it. Accumulation is in the tables' dtype (float32 or float64).
"""

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True, fastmath=True)
def _lookup(q, ids, keys, values, offsets, out):
    """q (N, dim), ids (N,), keys (v, dim), values (v, d_emb), offsets (vocab + 1,) -> out (N, d_emb)."""
    dim, d_emb = keys.shape[1], values.shape[1]
    for i in range(ids.shape[0]):
        start, end = offsets[ids[i]], offsets[ids[i] + 1]
        scores = np.empty(end - start, dtype=out.dtype)
        best = -np.inf
        for r in range(start, end):
            acc = 0.0
            for j in range(dim):
                acc += keys[r, j] * q[i, j]
            scores[r - start] = acc
            best = max(best, acc)
        total = 0.0
        for r in range(end - start):
            scores[r] = np.exp(scores[r] - best)
            total += scores[r]
        for j in range(d_emb):
            out[i, j] = 0.0
        for r in range(start, end):
            w = scores[r - start] / total
            for j in range(d_emb):
                out[i, j] += w * values[r, j]


def supported(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether this kernel can run the call: CPU, one float32/float64 dtype, no autocast, no grad."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or keys.requires_grad or values.requires_grad)
    return (
        not needs_grad
        and q.device.type == "cpu"
        and q.dtype == keys.dtype == values.dtype
        and q.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


def l3_lookup_small_cpu(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
) -> torch.Tensor:  # (N, d_emb)
    """The lookup on CPU without autograd; callers check `supported` first."""
    out = torch.empty(token_ids.shape[0], values.shape[1], dtype=q.dtype)
    arrays = (q.detach(), token_ids, keys.detach(), values.detach(), offsets)
    _lookup(*(t.contiguous().numpy() for t in arrays), out.numpy())
    return out
