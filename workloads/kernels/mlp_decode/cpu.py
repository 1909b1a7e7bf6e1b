"""A decoder block's MLP sublayer for CPU decode in one numba call: h + SwiGLU(RMSNorm(h)) for dense, or
h + the top-k experts of RMSNorm(h), routed in the kernel, for a dropless MoE (`reference.py` is the spec).
Details: docs/workloads.md#workloadskernelsmlp_decodecpu."""

import math

import numpy as np
import torch

from workloads.kernels.l3_lookup import small_cpu, sublayer_cpu

numba = small_cpu.numba
prange = small_cpu.prange

# Above this many positions torch's GEMMs (MKL, blocked) beat the kernel's row-by-row GEMVs (as for L3).
MAX_POSITIONS = sublayer_cpu.MAX_POSITIONS
QUAD = sublayer_cpu.QUAD


def _swiglu_rows(w1, w3, x, u):
    """u[p, o] = silu(w1[o] · x[p]) · (w3[o] · x[p]) for every row o (parallel over rows), positions four at a
    time as `sublayer_cpu._gemv`."""
    n = x.shape[0]
    quads = n - n % QUAD
    for o in prange(w1.shape[0]):
        r1, r3 = w1[o], w3[o]
        for p in range(0, quads, QUAD):
            x0, x1, x2, x3 = x[p], x[p + 1], x[p + 2], x[p + 3]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = u.dtype.type(0)
            for j in range(r1.shape[0]):
                g, v = r1[j], r3[j]
                a0 += g * x0[j]
                a1 += g * x1[j]
                a2 += g * x2[j]
                a3 += g * x3[j]
                b0 += v * x0[j]
                b1 += v * x1[j]
                b2 += v * x2[j]
                b3 += v * x3[j]
            u[p, o], u[p + 1, o] = _silu(a0) * b0, _silu(a1) * b1
            u[p + 2, o], u[p + 3, o] = _silu(a2) * b2, _silu(a3) * b3
        for p in range(quads, n):
            v = x[p]
            a = b = u.dtype.type(0)
            for j in range(v.shape[0]):
                a += r1[j] * v[j]
                b += r3[j] * v[j]
            u[p, o] = _silu(a) * b


def _silu(a):
    return a / (1 + np.exp(-a))


def _swiglu(w1, w3, w2, x, parallel, out):
    """out (n, dim) = w2 · (silu(w1 · x) ⊙ (w3 · x)) for the n rows of x."""
    u = np.empty((x.shape[0], w1.shape[0]), dtype=x.dtype)
    if parallel:
        _swiglu_rows_parallel(w1, w3, x, u)
        _gemv_parallel(w2, u, out)
    else:
        _swiglu_rows_serial(w1, w3, x, u)
        _gemv_serial(w2, u, out)


def _dense(h, norm_weight, eps, w1, w3, w2, parallel, out):
    """out = h + SwiGLU(RMSNorm(h)); h, out (N, dim)."""
    x = np.empty_like(h)
    _rms_norm(h, norm_weight, eps, x)
    _swiglu_jit(w1, w3, w2, x, parallel, out)
    out += h


def _route(x, gate, top_k, chosen, weights):
    """Each row's top_k experts of the logits gate · x[p] (the first of tied ones first) into chosen (N, k),
    and their weights: top-1 its softmax probability, top-k ≥ 2 the probabilities renormalized over the
    chosen (as `moe_dropless.route`, DeepSpeed's gates)."""
    logits = np.empty(gate.shape[0], dtype=x.dtype)
    taken = np.empty(gate.shape[0], dtype=np.bool_)
    for p in range(x.shape[0]):
        taken[:] = False
        for e in range(gate.shape[0]):
            acc = x.dtype.type(0)
            for j in range(x.shape[1]):
                acc += gate[e, j] * x[p, j]
            logits[e] = acc
        for k in range(top_k):  # a selection: top_k is 1 or 2 in practice
            best = -1
            for e in range(logits.shape[0]):
                if not taken[e] and (best < 0 or logits[e] > logits[best]):
                    best = e
            chosen[p, k], taken[best] = best, True
        biggest = logits[chosen[p, 0]]
        norm = 0.0
        if top_k == 1:
            for e in range(logits.shape[0]):
                norm += math.exp(logits[e] - biggest)
        else:
            for k in range(top_k):
                norm += math.exp(logits[chosen[p, k]] - biggest)
        for k in range(top_k):
            weights[p, k] = math.exp(logits[chosen[p, k]] - biggest) / norm


def _moe(h, norm_weight, eps, gate, slots, w1, w3, w2, top_k, parallel, out):
    """out = h + Σ_j weight_j · expert_{e_j}(RMSNorm(h)); expert e's weights are w1[slots[e]], …. Each
    expert with routes runs once over its rows, so a weight row is read once per step."""
    n = h.shape[0]
    x = np.empty_like(h)
    _rms_norm(h, norm_weight, eps, x)
    chosen = np.empty((n, top_k), dtype=np.int64)
    weights = np.empty((n, top_k), dtype=np.float64)
    _route_jit(x, gate, top_k, chosen, weights)
    out[:] = h
    rows, members, member_weights = np.empty_like(x), np.empty(n, dtype=np.int64), np.empty(n)
    y = np.empty_like(x)
    for e in range(gate.shape[0]):
        m = 0
        for p in range(n):
            for k in range(top_k):
                if chosen[p, k] == e:
                    rows[m], members[m], member_weights[m] = x[p], p, weights[p, k]
                    m += 1
        if m:
            s = slots[e]
            _swiglu_jit(w1[s], w3[s], w2[s], rows[:m], parallel, y[:m])
            for i in range(m):
                out[members[i]] += out.dtype.type(member_weights[i]) * y[i]


if numba is not None:
    _jit = {"cache": True, "nogil": True, "fastmath": True}
    _rms_norm = sublayer_cpu._rms_norm_jit
    _gemv_serial, _gemv_parallel = sublayer_cpu._gemv_serial, sublayer_cpu._gemv_parallel
    _silu = numba.njit(**_jit)(_silu)
    _swiglu_rows_serial = numba.njit(**_jit)(_swiglu_rows)
    _swiglu_rows_parallel = numba.njit(parallel=True, **_jit)(small_cpu.renamed(_swiglu_rows, "_parallel"))
    _swiglu_jit = numba.njit(**_jit)(_swiglu)
    _route_jit = numba.njit(**_jit)(_route)
    _dense = numba.njit(**_jit)(_dense)
    _moe = numba.njit(**_jit)(_moe)


def dense_tables(norm: torch.nn.RMSNorm, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> tuple:
    """The dense kernel's arguments after h: numpy views (they follow in-place updates of the weights)."""
    return ("dense", _arrays(norm.weight), _eps(norm), *_arrays(w1, w3, w2))


def moe_tables(
    norm: torch.nn.RMSNorm,
    gate: torch.Tensor,  # (E, dim)
    slots: torch.Tensor,  # (E,) int64: expert e's weights are w1[slots[e]], …
    w1: torch.Tensor,  # (S, ffn, dim)
    w3: torch.Tensor,  # (S, ffn, dim)
    w2: torch.Tensor,  # (S, dim, ffn)
    top_k: int,
) -> tuple:
    """The MoE kernel's arguments after h, as `dense_tables`."""
    return ("moe", _arrays(norm.weight), _eps(norm), *_arrays(gate, slots, w1, w3, w2), top_k)


def _arrays(*tensors: torch.Tensor):
    arrays = [t.detach().numpy() for t in tensors]
    return arrays[0] if len(arrays) == 1 else arrays


def _eps(norm: torch.nn.RMSNorm) -> float:
    return norm.eps if norm.eps is not None else torch.finfo(norm.weight.dtype).eps


def available(*weights: torch.Tensor) -> bool:
    """Whether a block can serve these weights with the kernel: numba installed, every weight a contiguous
    float32 CPU tensor (the kernels are built for the serving dtype; DeepSpeed's gate computes in it)."""
    return numba is not None and all(
        w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous() for w in weights
    )


def max_positions(tables: tuple) -> int:
    """The most positions a call runs with the kernel: MAX_POSITIONS for a MoE (it routes in the kernel:
    faster than the torch path at 1–8 positions) and for a dense MLP at 1 thread; a dense MLP on several
    threads runs it at 1 position only. Measured per decode step of the tiny dense model (interleaved):
    on 2 threads the kernel ties torch at 1 position and is 2–3% slower at 2 and 8; on 1 thread it is
    9–15% faster at 2 and 8."""
    if tables[0] == "moe" or torch.get_num_threads() == 1:
        return MAX_POSITIONS
    return 1


def runs(h: torch.Tensor, tables: tuple) -> bool:
    """Whether a served block's call on h (B, T, dim) takes the kernel with these tables: at most
    `max_positions` positions of float32, no grad mode, no autocast."""
    return (
        h.shape[0] * h.shape[1] <= max_positions(tables)
        and h.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def run(h: torch.Tensor, tables: tuple) -> torch.Tensor:
    """The kernel on h (..., dim) with `dense_tables` / `moe_tables` -> h + the sublayer, h's shape. The
    output is a numpy allocation, h is flattened on the numpy side (each torch op saved is µs at decode)."""
    threads = torch.get_num_threads()
    if threads > 1:
        small_cpu.use_threads(threads)
    hs = h.contiguous().numpy()
    out = np.empty_like(hs)
    dim = hs.shape[-1]
    kernel = _dense if tables[0] == "dense" else _moe
    kernel(hs.reshape(-1, dim), *tables[1:], threads > 1, out.reshape(-1, dim))
    return torch.from_numpy(out)
