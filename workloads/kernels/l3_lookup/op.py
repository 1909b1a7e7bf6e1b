"""The L3 lookup op that layers import: one entry point, the implementation picked by name.

`reference` is the per-position loop (the spec); `sorted` is the block-diagonal pure-torch fast path;
`small` is the per-position path for a few positions (decode: a numba kernel on CPU without autograd,
else a padded gather). `auto` picks `small` up to a number of positions and `sorted` above it. Other
implementations (Triton) register in IMPLS; layers never import an implementation module directly.
"""

from typing import Literal

import torch

from workloads.kernels.l3_lookup import small_cpu
from workloads.kernels.l3_lookup.reference import l3_lookup_reference
from workloads.kernels.l3_lookup.small import l3_lookup_small
from workloads.kernels.l3_lookup.sorted import l3_lookup_sorted

LookupImpl = Literal["auto", "reference", "sorted", "small"]
IMPLS = {"reference": l3_lookup_reference, "sorted": l3_lookup_sorted, "small": l3_lookup_small}

# `auto` thresholds, measured with `python -m workloads.l3.bench_small` (dim 256, 65K rows, cap 512, the
# 2-core CPU): the numba kernel (CPU, no grad) beats the sorted path up to a few hundred positions of
# real text; the padded gather (autograd or GPU) only up to a handful (its (N, d_max) rows grow fast).
SMALL_MAX_POSITIONS = 256
SMALL_MAX_POSITIONS_PADDED = 4


def resolve_impl(impl: str, n_positions: int, kernel_ok: bool = False) -> str:
    """The implementation `impl` runs for `n_positions` positions ("auto" resolved); kernel_ok: the CPU
    kernel can run the call (`small_cpu.supported`)."""
    if impl == "auto":
        limit = SMALL_MAX_POSITIONS if kernel_ok else SMALL_MAX_POSITIONS_PADDED
        return "small" if n_positions <= limit else "sorted"
    if impl not in IMPLS:
        raise ValueError(f"unknown L3 lookup impl {impl!r}; choose one of {sorted([*IMPLS, 'auto'])}")
    return impl


def l3_lookup(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
    impl: LookupImpl = "auto",
) -> torch.Tensor:  # (N, d_emb)
    """softmax(K_t q)ᵀ V_t for every position, t its token id. Inputs are assumed validated."""
    kernel_ok = impl == "auto" and small_cpu.supported(q, keys, values)
    return IMPLS[resolve_impl(impl, token_ids.shape[0], kernel_ok)](q, token_ids, keys, values, offsets)
