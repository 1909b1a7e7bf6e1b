"""Small-batch L3 lookup (decode, short prompts): a padded gather per position, no sort and no bins.
Details: docs/workloads.md#workloadskernelsl3_lookupsmall."""

import torch

from workloads.kernels.l3_lookup import small_cpu
from workloads.kernels.l3_lookup.sorted_function import compute_dtype


def l3_lookup_small(
    q: torch.Tensor,  # (N, dim) normalized queries
    token_ids: torch.Tensor,  # (N,) int64, each in [0, vocab)
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb); pass `keys` itself for tied tables
    offsets: torch.Tensor,  # (vocab + 1,) int64
) -> torch.Tensor:  # (N, d_emb)
    n = token_ids.shape[0]
    dtype = compute_dtype(q, keys, values)
    if n == 0:
        return q.new_zeros(0, values.shape[1], dtype=dtype)
    if small_cpu.supported(q, keys, values):
        return small_cpu.l3_lookup_small_cpu(q, token_ids, keys, values, offsets)
    start = offsets[token_ids]  # (N,) first row of each position's token
    count = offsets[token_ids + 1] - start  # (N,) its d_t
    d_max = int(count.max())  # the one device-to-host read
    arange = torch.arange(d_max, device=token_ids.device)
    rows = (start[:, None] + arange).clamp_(max=keys.shape[0] - 1).view(-1)  # (N * d_max,) in range
    padding = arange >= count[:, None]  # (N, d_max) True past each token's own rows
    with torch.autocast(q.device.type, enabled=False):  # dtypes explicit, as in the sorted path
        kb = keys.index_select(0, rows).to(dtype).view(n, d_max, -1)  # (N, d_max, dim)
        vb = kb if values is keys else values.index_select(0, rows).to(dtype).view(n, d_max, -1)
        scores = torch.bmm(kb, q.to(dtype).unsqueeze(2)).squeeze(2)  # (N, d_max)
        scores = scores.masked_fill(padding, float("-inf"))
        w = torch.softmax(scores, dim=-1, dtype=torch.promote_types(dtype, torch.float32))  # (N, d_max)
        return torch.bmm(w.to(dtype).unsqueeze(1), vb).squeeze(1)  # (N, d_emb)
