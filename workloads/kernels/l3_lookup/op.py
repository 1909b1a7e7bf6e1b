"""The L3 lookup op that layers import: one entry point, the implementation picked by name.

`reference` is the per-position loop (the spec); `sorted` is the block-diagonal pure-torch fast path;
`small` is the padded per-position gather for a few positions (decode). `auto` picks `small` when
N ≤ SMALL_MAX_POSITIONS and `sorted` otherwise. Other implementations (Triton) register in IMPLS;
layers never import an implementation module directly.
"""

from typing import Literal

import torch

from workloads.kernels.l3_lookup.reference import l3_lookup_reference
from workloads.kernels.l3_lookup.small import l3_lookup_small
from workloads.kernels.l3_lookup.sorted import l3_lookup_sorted

LookupImpl = Literal["auto", "reference", "sorted", "small"]
IMPLS = {"reference": l3_lookup_reference, "sorted": l3_lookup_sorted, "small": l3_lookup_small}

# `auto` threshold, measured with `python -m workloads.l3.bench --small` (tiny preset, dim 256, 2-core
# CPU): the small path wins below ~64 positions of real text and the sorted path above; see the bench.
SMALL_MAX_POSITIONS = 64


def resolve_impl(impl: str, n_positions: int) -> str:
    """The implementation `impl` runs for a call with `n_positions` positions ("auto" resolved)."""
    if impl == "auto":
        return "small" if n_positions <= SMALL_MAX_POSITIONS else "sorted"
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
    return IMPLS[resolve_impl(impl, token_ids.shape[0])](q, token_ids, keys, values, offsets)
