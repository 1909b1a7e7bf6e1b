"""The L3 lookup op that layers import: one entry point, the implementation picked by name.

`reference` is the per-position loop (the spec); `sorted` is the block-diagonal pure-torch fast path.
A Triton path will register here too; layers never import an implementation module directly.
"""

from typing import Literal

import torch

from workloads.kernels.l3_lookup.reference import l3_lookup_reference
from workloads.kernels.l3_lookup.sorted import l3_lookup_sorted

LookupImpl = Literal["reference", "sorted"]
IMPLS = {"reference": l3_lookup_reference, "sorted": l3_lookup_sorted}


def l3_lookup(
    q: torch.Tensor,  # (N, dim)
    token_ids: torch.Tensor,  # (N,) int64
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64
    impl: LookupImpl = "sorted",
) -> torch.Tensor:  # (N, d_emb)
    """softmax(K_t q)ᵀ V_t for every position, t its token id. Inputs are assumed validated."""
    if impl not in IMPLS:
        raise ValueError(f"unknown L3 lookup impl {impl!r}; choose one of {sorted(IMPLS)}")
    return IMPLS[impl](q, token_ids, keys, values, offsets)
