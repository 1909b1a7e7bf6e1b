"""Sorted, block-diagonal L3 lookup in pure torch (L3_SPEC §3): the training fast path.
Details: docs/workloads.md#workloadskernelsl3_lookupsorted."""

import itertools
from typing import NamedTuple

import torch

from workloads.kernels.l3_lookup.sorted_function import SortedLookup, _Plan, lookup_forward


def _ceil_log2(n: torch.Tensor) -> torch.Tensor:
    """Elementwise ceil(log2(n)) for integer 1 ≤ n < 2**53: the binary exponent of n - 1 (frexp is exact
    on float64 for such integers), with no data-dependent loop and so no host read."""
    return torch.frexp((n - 1).to(torch.float64)).exponent.long()


def _padded_size(n: torch.Tensor) -> torch.Tensor:
    """Round n ≥ 1 up to the next bin size, a multiple of 2^(e - 2) where e = ceil(log2 n): sizes 1, 2, 3,
    4, 6, 8, 12, 16, 24, ...: padding < 1.5x per axis (vs < 2x for power-of-two bins) for ~2x more,
    smaller bins. Measured on the built-in corpus (8×512 tokens, 65K rows): padded pairs / exact pairs =
    1.68 (power of two), 1.29 (half octaves, 122 bins), 1.13 (quarter octaves, 216 bins); on the 2-core
    CPU all three run within noise of each other, so half octaves are the middle ground."""
    step = 1 << (_ceil_log2(n) - 2).clamp(min=0)
    return (n + step - 1) // step * step


def _size_index(padded: torch.Tensor) -> torch.Tensor:
    """Index of a padded size in the sequence above: 2e - (size < 2^e), e = ceil(log2 size); 1 -> 0,
    2 -> 2, 3 -> 3, 4 -> 4, 6 -> 5, 8 -> 6, ... (index 1 is unused). Inverse: `_size_of_index`."""
    e = _ceil_log2(padded)
    return 2 * e - (padded < (1 << e)).long()


def _size_of_index(index: int) -> int:
    e, below = (index + 1) // 2, index % 2
    return 3 << (e - 2) if below else 1 << e


def _n_indices(max_size: int) -> int:
    """Number of size indices for sizes up to max_size (host arithmetic)."""
    return 2 * (max_size - 1).bit_length() + 1


def l3_lookup_sorted(
    q: torch.Tensor,  # (N, dim) normalized queries
    token_ids: torch.Tensor,  # (N,) int64, each in [0, vocab)
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb); pass `keys` itself for tied tables
    offsets: torch.Tensor,  # (vocab + 1,) int64
    sparse_grad: bool = False,
) -> torch.Tensor:  # (N, d_emb)
    """The lookup with a hand-written backward (first order only: no double backward); `sparse_grad`:
    the table gradients are sparse COO tensors over the touched rows (see sorted_function.py)."""
    n_tokens, d_emb = token_ids.shape[0], values.shape[1]
    if n_tokens == 0:
        return q.new_zeros(0, d_emb)
    plan = _plan(token_ids, offsets, keys.shape[0])
    if torch.is_grad_enabled() and (q.requires_grad or keys.requires_grad or values.requires_grad):
        return SortedLookup.apply(q, keys, values, plan, sparse_grad)
    # Inference: the same forward, keeping nothing for a backward.
    return lookup_forward(q, keys, values, plan, keep=False)[0]


class _Groups(NamedTuple):
    """Groups of equal ids, in (N,) arrays: entries past the U distinct ids have n_per = 0."""

    perm: torch.Tensor  # (N,) sorted position -> original position
    n_per: torch.Tensor  # occurrences of each distinct id (0 past U)
    q_start: torch.Tensor  # first sorted position of each group
    row_start: torch.Tensor  # first table row of each id
    d_per: torch.Tensor  # rows owned by each id


def _groups(token_ids: torch.Tensor, offsets: torch.Tensor) -> _Groups:
    """Sort positions by token id (stable) and describe each group of equal ids, with no host read."""
    n = token_ids.shape[0]
    sorted_ids, perm = torch.sort(token_ids, stable=True)  # (N,), (N,)
    starts_group = torch.ones(n, dtype=torch.bool, device=token_ids.device)
    torch.ne(sorted_ids[1:], sorted_ids[:-1], out=starts_group[1:])
    group = torch.cumsum(starts_group, 0) - 1  # (N,) group of each sorted position
    n_per = torch.zeros(n, dtype=torch.long, device=token_ids.device).index_add_(
        0, group, torch.ones_like(group)
    )  # (N,)
    uniq = torch.zeros_like(sorted_ids).scatter_(0, group, sorted_ids)  # equal values per group
    row_start = offsets[uniq]
    return _Groups(perm, n_per, torch.cumsum(n_per, 0) - n_per, row_start, offsets[uniq + 1] - row_start)


def _plan(token_ids: torch.Tensor, offsets: torch.Tensor, n_rows: int) -> _Plan:
    """Bin the groups by (padded n, padded d) and build every index of the padded layout at once,
    with a constant number of torch ops and one host read (the per-bin loop only slices)."""
    g = _groups(token_ids, offsets)
    n_d_keys = _n_indices(max(n_rows, 1))
    n_keys = _n_indices(token_ids.shape[0]) * n_d_keys  # possible (n, d) bins; key n_keys = no group
    n_pad, d_pad = _padded_size(g.n_per.clamp(min=1)), _padded_size(g.d_per.clamp(min=1))
    key = torch.where(g.n_per > 0, _size_index(n_pad) * n_d_keys + _size_index(d_pad), n_keys)
    counts = torch.zeros(2 * (n_keys + 1), dtype=torch.long, device=key.device)
    counts.index_add_(0, key, torch.ones_like(key))  # groups per bin
    counts.index_add_(0, key + n_keys + 1, (d_pad != g.d_per).long())  # groups with padded rows per bin
    host = counts.tolist()  # the plan's one device-to-host read
    bins, row_padded = [], []
    for k in range(n_keys):
        if host[k]:
            bins.append((host[k], _size_of_index(k // n_d_keys), _size_of_index(k % n_d_keys)))
            row_padded.append(host[n_keys + 1 + k] > 0)
    n_groups = sum(b[0] for b in bins)
    n_slots, r_slots = sum(G * n for G, n, _ in bins), sum(G * d for G, _, d in bins)
    order = torch.argsort(key, stable=True)[:n_groups]  # the U real groups in bin order
    n_pad, d_pad, n_per, d_per = n_pad[order], d_pad[order], g.n_per[order], g.d_per[order]
    q_group, q_local, q_valid = _slots(n_per, n_pad, n_slots)  # (Sq,) each
    r_group, r_local, r_valid = _slots(d_per, d_pad, r_slots)  # (Sr,) each
    pos = g.perm[g.q_start[order][q_group] + q_local]
    r_idx = g.row_start[order][r_group] + r_local
    n = token_ids.shape[0]
    # Each real slot writes its index at its position; padding slots write into a spare last entry.
    slot = torch.empty(n + 1, dtype=torch.long, device=key.device)
    slot.scatter_(0, torch.where(q_valid, pos, n), torch.arange(n_slots, device=key.device))
    q_slices = _consecutive_slices([size * n for size, n, _ in bins])
    r_slices = _consecutive_slices([size * d for size, _, d in bins])
    return _Plan(pos, r_idx, ~r_valid, slot[:n], bins, q_slices, r_slices, row_padded)


def _slots(
    sizes: torch.Tensor, padded: torch.Tensor, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For groups of `sizes` items laid out in `padded`-long blocks (Σ padded = total, known on the
    host): each slot's group, its index within the group (0 for padding) and whether it is a real item.
    All (total,)."""
    arange = torch.arange(sizes.numel(), device=sizes.device)
    group = torch.repeat_interleave(arange, padded, output_size=total)
    first = torch.cumsum(padded, 0) - padded
    local = torch.arange(total, device=sizes.device) - first[group]
    valid = local < sizes[group]
    return group, torch.where(valid, local, 0), valid


def _consecutive_slices(lengths: list[int]) -> list[slice]:
    """Slices cutting a buffer into consecutive pieces of `lengths`."""
    ends = list(itertools.accumulate(lengths))
    return [slice(end - length, end) for end, length in zip(ends, lengths, strict=True)]
