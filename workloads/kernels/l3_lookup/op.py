"""The L3 lookup op that layers import: one entry point, the implementation picked by name.
Details: docs/workloads.md#workloadskernelsl3_lookupop."""

import functools
import importlib.util
from typing import Literal, get_args

import torch

from workloads.kernels.l3_lookup import small_cpu
from workloads.kernels.l3_lookup.reference import l3_lookup_reference
from workloads.kernels.l3_lookup.small import l3_lookup_small
from workloads.kernels.l3_lookup.sorted import l3_lookup_sorted

LookupImpl = Literal["auto", "reference", "sorted", "small", "triton"]
IMPL_NAMES: tuple[str, ...] = get_args(LookupImpl)

# `auto` thresholds, measured with the former small-batch L3 benchmark (dim 256, 65K rows, cap 512, the
# 2-core CPU): the numba kernel (CPU, no grad) beats the sorted path up to a few hundred positions of
# real text; the padded gather (autograd or GPU) only up to a handful (its (N, d_max) rows grow fast).
SMALL_MAX_POSITIONS = 256
SMALL_MAX_POSITIONS_PADDED = 4


def l3_lookup_triton(q, token_ids, keys, values, offsets):
    """The Triton impl with its defaults (deterministic backward); see triton.py."""
    from workloads.kernels.l3_lookup.triton import l3_lookup_triton as run

    return run(q, token_ids, keys, values, offsets)


@functools.cache
def triton_available() -> bool:
    """Whether the Triton package is installed and imports (checked once per process)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


IMPLS = {
    "reference": l3_lookup_reference,
    "sorted": l3_lookup_sorted,
    "small": l3_lookup_small,
    "triton": l3_lookup_triton,
}


def resolve_impl(
    impl: LookupImpl, device: torch.device, n_positions: int | None = None, kernel_ok: bool = False
) -> str:
    """The implementation `impl` runs on `device` for `n_positions` positions (None: unknown, never
    `small`): itself, or for `auto` triton on CUDA (when it imports), else small for few positions
    (up to SMALL_MAX_POSITIONS when `kernel_ok`, the CPU kernel can run the call; else up to
    SMALL_MAX_POSITIONS_PADDED), else sorted."""
    if impl == "auto":
        if device.type == "cuda" and triton_available():
            return "triton"
        limit = SMALL_MAX_POSITIONS if kernel_ok else SMALL_MAX_POSITIONS_PADDED
        return "small" if n_positions is not None and n_positions <= limit else "sorted"
    if impl not in IMPLS:
        raise ValueError(f"unknown L3 lookup impl {impl!r}; choose one of {list(IMPL_NAMES)}")
    return impl


def l3_lookup(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
    impl: LookupImpl = "auto",
    sparse_grad: bool = False,
) -> torch.Tensor:  # (N, d_emb)
    """softmax(K_t q)ᵀ V_t for every position, t its token id. Inputs are assumed validated.
    sparse_grad: the `sorted` path returns sparse COO table gradients over the touched rows (the others
    return dense ones; row-sparse optimizers accept both)."""
    kernel_ok = impl == "auto" and small_cpu.supported(q, keys, values)
    name = resolve_impl(impl, q.device, token_ids.shape[0], kernel_ok)
    if name == "sorted":
        return l3_lookup_sorted(q, token_ids, keys, values, offsets, sparse_grad)
    return IMPLS[name](q, token_ids, keys, values, offsets)
