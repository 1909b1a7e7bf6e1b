"""Triton L3 lookup (L3_SPEC §1, §3): validating launcher and autograd Function over triton_kernels.py.
Details: docs/workloads.md#workloadskernelsl3_lookuptriton."""

import contextlib

import torch
import triton
from torch.autograd.function import once_differentiable

from workloads.kernels.l3_lookup import triton_kernels as K
from workloads.kernels.l3_lookup.sorted_function import compute_dtype

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ID_DTYPES = (torch.int64, torch.int32)
_FWD_TILE_ELEMS = 8192  # BLOCK_R × max(BLOCK_D, BLOCK_E) of one streamed row tile, forward and dq
_BWD_TILE_ELEMS = 4096  # the table kernels hold four such tiles (K, V, dK, dV)
_MAX_SPLIT = 16  # row-tile lanes per token in the table backward (programs that share one token's rows)


def interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (CPU tensors, numerics only)."""
    return type(K.lookup_fwd_kernel).__name__ == "InterpretedFunction"


def _check_tensor(name: str, t: torch.Tensor, ndim: int, dtypes: tuple, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}; the triton impl takes {', '.join(map(str, dtypes))}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but q is on {device}: all inputs must share one device")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {t.stride()}")


def validate(q, token_ids, keys, values, offsets) -> None:
    """Raise ValueError naming the first bad argument. Shapes:

    q          (N, dim)        float32 / bfloat16 / float16   queries (RMSNorm_in(x))
    token_ids  (N,)            int64 / int32                  each in [0, vocab); not range-checked here
    keys       (v, dim)        float32 / bfloat16 / float16   token t owns rows [offsets[t], offsets[t+1])
    values     (v, d_emb)      float32 / bfloat16 / float16   `keys` itself for tied tables (d_emb = dim)
    offsets    (vocab + 1,)    int64                          nondecreasing prefix sums, offsets[-1] ≤ v
    """
    if not isinstance(q, torch.Tensor):
        raise ValueError(f"q must be a torch.Tensor, got {type(q).__name__}")
    device = q.device
    if device.type != "cuda" and not (device.type == "cpu" and interpreted()):
        raise ValueError(
            f"q is on {device}: the triton impl needs a CUDA device "
            "(CPU tensors run only under TRITON_INTERPRET=1, set before the kernels are imported)"
        )
    _check_tensor("q", q, 2, FLOAT_DTYPES, device)
    _check_tensor("token_ids", token_ids, 1, ID_DTYPES, device)
    _check_tensor("keys", keys, 2, FLOAT_DTYPES, device)
    _check_tensor("values", values, 2, FLOAT_DTYPES, device)
    _check_tensor("offsets", offsets, 1, (torch.int64,), device)
    if token_ids.shape[0] != q.shape[0]:
        raise ValueError(f"token_ids has {token_ids.shape[0]} positions but q has {q.shape[0]} (N)")
    if keys.shape[1] != q.shape[1]:
        raise ValueError(f"keys has width {keys.shape[1]} but q has dim {q.shape[1]}")
    if values.shape[0] != keys.shape[0]:
        raise ValueError(f"values has {values.shape[0]} rows but keys has {keys.shape[0]} (v)")
    if offsets.shape[0] < 2:
        raise ValueError(f"offsets must hold vocab + 1 ≥ 2 entries, got shape {tuple(offsets.shape)}")


class _Blocks:
    """Power-of-two tile sizes and launch width for a (dim, d_emb) pair."""

    def __init__(self, dim: int, d_emb: int, tile_elems: int):
        self.d, self.e = triton.next_power_of_2(dim), triton.next_power_of_2(d_emb)
        self.r = max(2, min(64, tile_elems // max(self.d, self.e)))
        self.warps = 4 if max(self.d, self.e) <= 256 else 8

    def kwargs(self) -> dict:
        return {"BLOCK_D": self.d, "BLOCK_E": self.e, "BLOCK_R": self.r, "num_warps": self.warps}


def _forward(q, ids, keys, values, offsets, out_dtype, keep_fp32: bool):
    """(out (N, d_emb) out_dtype, out32 (N, d_emb) fp32 or None, lse (N,) fp32)."""
    n, dim, d_emb = q.shape[0], q.shape[1], values.shape[1]
    buf_dtype = torch.float32 if keep_fp32 else out_dtype
    out = torch.empty(n, d_emb, dtype=buf_dtype, device=q.device)
    lse = torch.empty(n, dtype=torch.float32, device=q.device)
    blocks = _Blocks(dim, d_emb, _FWD_TILE_ELEMS)
    K.lookup_fwd_kernel[(n,)](q, ids, keys, values, offsets, out, lse, dim, d_emb, **blocks.kwargs())
    return out.to(out_dtype), (out if keep_fp32 else None), lse


def _table_grads(ctx, q, ids, keys, values, offsets, g, lse, delta):
    """(dkeys, dvalues or None): fp32 accumulation, stored in each table's dtype; tied: all in dkeys."""
    n, dim, d_emb = q.shape[0], q.shape[1], values.shape[1]
    blocks = _Blocks(dim, d_emb, _BWD_TILE_ELEMS)
    split = min(_MAX_SPLIT, triton.cdiv(keys.shape[0], blocks.r))
    tied = ctx.tied
    if ctx.deterministic:
        dk = torch.zeros_like(keys)
        dv = dk if tied else torch.zeros_like(values)
        sorted_ids, perm = torch.sort(ids, stable=True)  # stable: a fixed summation order per row
        group_end = torch.searchsorted(sorted_ids, sorted_ids, right=True)  # (N,) end of each id's group
        K.lookup_bwd_tables_kernel[(n, split)](
            q, sorted_ids, perm, group_end, keys, values, offsets, g, lse, delta, dk, dv,
            n, dim, d_emb, TIED=tied, SPLIT=split, **blocks.kwargs(),
        )  # fmt: skip
    else:
        dk = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device)
        dv = dk if tied else torch.zeros(values.shape, dtype=torch.float32, device=keys.device)
        K.lookup_bwd_tables_atomic_kernel[(n, split)](
            q, ids, keys, values, offsets, g, lse, delta, dk, dv,
            dim, d_emb, TIED=tied, SPLIT=split, **blocks.kwargs(),
        )  # fmt: skip
        dk, dv = dk.to(keys.dtype), dv.to(values.dtype)
    return dk, None if tied else dv


class TritonLookup(torch.autograd.Function):
    """softmax(K_t q)ᵀ V_t; `values is keys` means tied tables (one gradient, returned for keys)."""

    @staticmethod
    def forward(ctx, q, keys, values, ids, offsets, deterministic: bool):
        out_dtype = compute_dtype(q, keys, values)
        out, out32, lse = _forward(q, ids, keys, values, offsets, out_dtype, keep_fp32=True)
        ctx.tied, ctx.deterministic = values is keys, deterministic
        ctx.save_for_backward(q, keys, values, ids, offsets, out32, lse)
        return out

    @staticmethod
    @once_differentiable  # double backward raises instead of returning wrong second derivatives
    def backward(ctx, grad_out):  # grad_out: (N, d_emb)
        q, keys, values, ids, offsets, out32, lse = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        g = grad_out.contiguous()
        delta = (g.float() * out32).sum(-1)  # (N,) = Σ_r w_r (g · V_r), fp32
        dq = dk = dv = None
        if need_q:
            dq = torch.empty_like(q)
            blocks = _Blocks(q.shape[1], values.shape[1], _FWD_TILE_ELEMS)
            K.lookup_bwd_dq_kernel[(q.shape[0],)](
                q, ids, keys, values, offsets, g, lse, delta, dq, q.shape[1], values.shape[1],
                **blocks.kwargs(),
            )  # fmt: skip
        if need_k or need_v:
            dk, dv = _table_grads(ctx, q, ids, keys, values, offsets, g, lse, delta)
            dk = dk if need_k or ctx.tied else None
            dv = dv if need_v else None
        return dq, dk, dv, None, None, None


def l3_lookup_triton(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64 / int32
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb); `keys` itself for tied tables
    offsets: torch.Tensor,  # (vocab + 1,) int64
    *,
    deterministic: bool = True,
) -> torch.Tensor:  # (N, d_emb), in the autocast dtype under autocast, else the promoted input dtype
    """The lookup on Triton kernels; `deterministic=False` makes the table backward use atomics."""
    validate(q, token_ids, keys, values, offsets)
    if q.shape[0] == 0:
        return q.new_zeros(0, values.shape[1], dtype=compute_dtype(q, keys, values))
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        if torch.is_grad_enabled() and (q.requires_grad or keys.requires_grad or values.requires_grad):
            return TritonLookup.apply(q, keys, values, token_ids, offsets, deterministic)
        out_dtype = compute_dtype(q, keys, values)
        return _forward(q, token_ids, keys, values, offsets, out_dtype, keep_fp32=False)[0]
