"""Reference L3 lookup (L3_SPEC §1): a per-position loop, the readable spec of the op.
Details: docs/workloads.md#workloadskernelsl3_lookupreference."""

import torch


def l3_lookup_reference(
    q: torch.Tensor,  # (N, dim) normalized queries
    token_ids: torch.Tensor,  # (N,) int, each in [0, vocab)
    keys: torch.Tensor,  # (v, dim)
    values: torch.Tensor,  # (v, d_emb)
    offsets: torch.Tensor,  # (vocab + 1,) int64; token t owns rows [offsets[t], offsets[t+1])
) -> torch.Tensor:  # (N, d_emb)
    counts = (offsets[1:] - offsets[:-1]).tolist()
    key_rows, value_rows = keys.split(counts), values.split(counts)  # per-token (d_t, ·) views
    rows = []
    for i, t in enumerate(token_ids.tolist()):
        k_t, v_t = key_rows[t], value_rows[t]  # (d_t, dim), (d_t, d_emb)
        weights = torch.softmax(k_t @ q[i], dim=0)  # (d_t,)
        rows.append(weights @ v_t)  # (d_emb,)
    if not rows:
        return q.new_zeros(0, values.shape[1])
    return torch.stack(rows)
