"""The L3 lookup op that layers import: one entry point, the implementation picked by name.

`reference` is the per-position loop (the spec); `sorted` is the block-diagonal pure-torch fast path;
`triton` runs the Triton kernels (triton.py; imported on first use, so CPU-only installs never load
Triton); `auto` picks `triton` for CUDA tensors when Triton imports, else `sorted`.
Layers never import an implementation module directly.
"""

import functools
import importlib.util
from typing import Literal, get_args

import torch

from workloads.kernels.l3_lookup.reference import l3_lookup_reference
from workloads.kernels.l3_lookup.sorted import l3_lookup_sorted

LookupImpl = Literal["auto", "reference", "sorted", "triton"]
IMPL_NAMES: tuple[str, ...] = get_args(LookupImpl)


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


IMPLS = {"reference": l3_lookup_reference, "sorted": l3_lookup_sorted, "triton": l3_lookup_triton}


def resolve_impl(impl: LookupImpl, device: torch.device) -> str:
    """The implementation `impl` runs on `device`: itself, or for `auto` triton on CUDA else sorted."""
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "sorted"
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
) -> torch.Tensor:  # (N, d_emb)
    """softmax(K_t q)ᵀ V_t for every position, t its token id. Inputs are assumed validated."""
    return IMPLS[resolve_impl(impl, q.device)](q, token_ids, keys, values, offsets)
