"""CPU kernel of the small-batch L3 lookup (numba): one pass over each position's own table rows.

Inference only (no autograd): for position i with token t, scores over t's rows, a max-shifted softmax
and the weighted sum of t's value rows, in registers and one (positions of t, d_t) scratch matrix;
nothing the size of the gathered rows is ever materialized. Positions are grouped by id (an argsort
inside), so each distinct id's rows are read from memory once: the right trade for up to a few hundred
positions, where the torch paths pay more in op dispatch and in copying gathered rows than arithmetic.
`nogil` lets the offload prefetch thread run beside it. Accumulates in the tables' dtype (fp32 or fp64).
"""

import numpy as np
import torch

try:  # optional: the GPU image has no numba; `supported` is then False and the torch paths run
    import numba
except ImportError:  # pragma: no cover - depends on the install
    numba = None


def _lookup(q, ids, keys, values, offsets, out):
    """q (N, dim), ids (N,), keys (v, dim), values (v, d_emb), offsets (vocab + 1,) -> out (N, d_emb).
    Positions are visited grouped by id, so a repeated id's rows are read from memory once and reused
    from cache by each of its queries."""
    order = np.argsort(ids, kind="mergesort")
    n, d_emb = ids.shape[0], values.shape[1]
    g0 = 0
    while g0 < n:
        t = ids[order[g0]]
        g1 = g0 + 1
        while g1 < n and ids[order[g1]] == t:
            g1 += 1
        start, end = offsets[t], offsets[t + 1]
        scores = np.empty((g1 - g0, end - start), dtype=out.dtype)  # (group, d_t)
        for r in range(start, end):
            for a in range(g0, g1):
                i = order[a]
                acc = 0.0
                for j in range(keys.shape[1]):
                    acc += keys[r, j] * q[i, j]
                scores[a - g0, r - start] = acc
        for a in range(g1 - g0):
            best = scores[a].max()
            total = 0.0
            for r in range(end - start):
                scores[a, r] = np.exp(scores[a, r] - best)
                total += scores[a, r]
            scores[a] /= total
            out[order[g0 + a]] = 0.0
        for r in range(start, end):
            for a in range(g0, g1):
                i, w = order[a], scores[a - g0, r - start]
                for j in range(d_emb):
                    out[i, j] += w * values[r, j]
        g0 = g1


if numba is not None:
    _lookup = numba.njit(cache=True, nogil=True, fastmath=True)(_lookup)


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
