"""The whole L3 sublayer for CPU inference at a few positions (decode) in one numba call.
Details: docs/workloads.md#workloadskernelsl3_lookupsublayer_cpu."""

import numpy as np
import torch

from workloads.kernels.l3_lookup import small_cpu

numba = small_cpu.numba
prange = small_cpu.prange

QUAD = 4  # positions per pass over a weight row (`_gemv`)
# Above this many positions the torch path's GEMMs (MKL, blocked) beat the kernel's row-by-row GEMVs.
MAX_POSITIONS = 8


def _rms_norm(x, weight, eps, out):
    """out[p] = x[p] / sqrt(mean(x[p]²) + eps) · weight, as torch.nn.RMSNorm (statistics in x's dtype)."""
    for p in range(x.shape[0]):
        ss = x.dtype.type(0)
        for j in range(x.shape[1]):
            ss += x[p, j] * x[p, j]
        scale = 1 / np.sqrt(ss / x.shape[1] + eps)
        for j in range(x.shape[1]):
            out[p, j] = x[p, j] * scale * weight[j]


def _gemv(w, v, out):
    """out[p, o] = w[o] · v[p] for every output row o (parallel over rows). Positions go four at a time
    (`QUAD`): a weight element loaded once feeds four sums (1.5× at 8 positions)."""
    n = v.shape[0]
    quads = n - n % QUAD
    for o in prange(w.shape[0]):
        row = w[o]
        for p in range(0, quads, QUAD):
            v0, v1, v2, v3 = v[p], v[p + 1], v[p + 2], v[p + 3]
            a0 = a1 = a2 = a3 = out.dtype.type(0)
            for j in range(row.shape[0]):
                r = row[j]
                a0 += r * v0[j]
                a1 += r * v1[j]
                a2 += r * v2[j]
                a3 += r * v3[j]
            out[p, o], out[p + 1, o], out[p + 2, o], out[p + 3, o] = a0, a1, a2, a3
        for p in range(quads, n):
            vec = v[p]
            acc = out.dtype.type(0)
            for j in range(row.shape[0]):
                acc += row[j] * vec[j]
            out[p, o] = acc


def _dense_in(x, w_in, eps_in, d_emb):
    """(queries RMSNorm_in(x), an empty (N, d_emb) for the lookup's output)."""
    q = np.empty_like(x)  # (N, dim)
    _rms_norm_jit(x, w_in, eps_in, q)
    return q, np.empty((x.shape[0], d_emb), dtype=x.dtype)


def _mix_input(x, d_up):
    """An (N, d_up + dim) buffer for W_mix's input [u | x], x already copied in: one GEMV reads all of W_mix
    (a second call for the x block cost a parallel launch and ~2.5 µs at 1 position)."""
    ux = np.empty((x.shape[0], d_up + x.shape[1]), dtype=x.dtype)
    ux[:, d_up:] = x
    return ux


def _sublayer_serial(x, ids, keys, values, offsets, w_in, eps_in, w_up, w_out, eps_out, w_mix, residual, out):
    q, looked = _dense_in_jit(x, w_in, eps_in, values.shape[1])
    _lookup_serial(q, ids, keys, values, offsets, looked, CHUNK_ROWS)  # (N, d_emb)
    ux = _mix_input_jit(x, w_up.shape[0])
    u = ux[:, : w_up.shape[0]]  # (N, d_up)
    _gemv_serial(w_up, looked, u)
    _rms_norm_jit(u, w_out, eps_out, u)  # in place: each element is read before it is written
    _gemv_serial(w_mix, ux, out)  # (N, dim) = W_mix · [u | x]
    if residual:
        out += x


def _sublayer_parallel(
    x, ids, keys, values, offsets, w_in, eps_in, w_up, w_out, eps_out, w_mix, residual, out
):
    """`_sublayer_serial` with the lookup's items and the GEMVs' rows spread over numba's threads."""
    q, looked = _dense_in_jit(x, w_in, eps_in, values.shape[1])
    _lookup_parallel(q, ids, keys, values, offsets, looked, CHUNK_ROWS)
    ux = _mix_input_jit(x, w_up.shape[0])
    u = ux[:, : w_up.shape[0]]
    _gemv_parallel(w_up, looked, u)
    _rms_norm_jit(u, w_out, eps_out, u)
    _gemv_parallel(w_mix, ux, out)
    if residual:
        out += x


CHUNK_ROWS = small_cpu.CHUNK_ROWS
_serial = _parallel = None
if numba is not None:
    _jit = {"cache": True, "nogil": True, "fastmath": True}
    _lookup_serial, _lookup_parallel = small_cpu._lookup_serial, small_cpu._lookup_parallel
    _rms_norm_jit = numba.njit(**_jit)(_rms_norm)
    _dense_in_jit = numba.njit(**_jit)(_dense_in)
    _mix_input_jit = numba.njit(**_jit)(_mix_input)
    _gemv_serial = numba.njit(**_jit)(_gemv)
    _gemv_parallel = numba.njit(parallel=True, **_jit)(small_cpu.renamed(_gemv, "_parallel"))
    _serial = numba.njit(**_jit)(_sublayer_serial)
    _parallel = numba.njit(**_jit)(_sublayer_parallel)


def supported(x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether the kernel can run this call: the lookup kernel's conditions, at most MAX_POSITIONS
    positions, and every weight on the CPU in x's dtype without a gradient to record."""
    positions = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    needs_grad = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
    return (
        0 < positions <= MAX_POSITIONS
        and not needs_grad
        and small_cpu.supported(x, keys, values)
        and all(w.device.type == "cpu" and w.dtype == x.dtype for w in weights)
    )


def l3_sublayer_cpu(
    x: torch.Tensor,  # (N, dim) the raw input
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
    norm_in: torch.nn.RMSNorm,  # over dim
    up: torch.Tensor,  # (d_up, d_emb) W_up
    norm_out: torch.nn.RMSNorm,  # over d_up
    mix: torch.Tensor,  # (dim, d_up + dim) W_mix
    residual: bool,
    parallel: bool | None = None,  # None: parallel when torch runs more than 1 thread
) -> torch.Tensor:  # (N, dim)
    """W_mix · concat(RMSNorm_out(W_up · lookup(RMSNorm_in(x))), x) (+ x); callers check `supported`."""
    tables = static_arrays(keys, values, offsets, norm_in, up, norm_out, mix, residual)
    return run(x, token_ids, tables, parallel)


def static_arrays(keys, values, offsets, norm_in, up, norm_out, mix, residual: bool) -> tuple:
    """The kernel's arguments after x and the ids, as numpy views of the tensors (`l3_sublayer_cpu`'s
    arguments): a caller that serves many calls with the same tensors builds them once. A view follows
    in-place updates of contiguous tensors; a non-contiguous one is a copy taken now."""
    k = keys.detach().contiguous().numpy()
    v = k if values is keys else values.detach().contiguous().numpy()
    eps_in = norm_in.eps if norm_in.eps is not None else torch.finfo(keys.dtype).eps
    eps_out = norm_out.eps if norm_out.eps is not None else torch.finfo(keys.dtype).eps
    w_in, w_out, w_up, w_mix = (w.detach().numpy() for w in (norm_in.weight, norm_out.weight, up, mix))
    return (k, v, offsets.numpy(), w_in, eps_in, w_up, w_out, eps_out, w_mix, residual)


def run(
    x: torch.Tensor, token_ids: torch.Tensor, tables: tuple, parallel: bool | None = None
) -> torch.Tensor:
    """The kernel on x (..., dim) and integer token_ids (...) with `static_arrays`' tables -> (..., dim).
    Shapes are flattened on the numpy side and the output is a numpy allocation: each torch op a decode
    step saves here is a few µs (docs)."""
    threads = torch.get_num_threads()
    if parallel is None:
        parallel = threads > 1
    if parallel:
        small_cpu.use_threads(threads)
    if token_ids.dtype != torch.int64:  # the kernel is built for int64 ids
        token_ids = token_ids.long()
    xs = x.detach().contiguous().numpy()
    out = np.empty_like(xs)
    dim = xs.shape[-1]
    kernel = _parallel if parallel else _serial
    kernel(xs.reshape(-1, dim), token_ids.contiguous().numpy().reshape(-1), *tables, out.reshape(-1, dim))
    return torch.from_numpy(out)
