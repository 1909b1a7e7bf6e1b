"""Dropless MoE for serving: every token reaches its top_k experts; no capacity, no dense (S, E, C)
dispatch tensor (MegaBlocks' dropless MoE; torchtitan keeps a for-loop expert path beside grouped GEMM).
Details: docs/workloads.md#workloadsmodelsmoe_dropless."""

import heapq
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# At most this many routes (tokens × top_k) are routed and grouped on the host (a decode step's few
# tokens, `dropless_host`): the logits' one host read replaces the softmax, the top-k, the sort, the
# count and most gather and scatter ops.
HOST_GROUPING_MAX_ROUTES = 16


def route(x: torch.Tensor, gate_weight: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D), gate_weight (E, D) -> (weights (N, k) float32, experts (N, k) int64)."""
    probs = F.softmax(F.linear(x.float(), gate_weight.float()), dim=-1)  # (N, E) float32
    if top_k == 1:  # one reduction instead of a top-k (per-call overhead matters at decode)
        return probs.max(dim=-1, keepdim=True)
    weights, experts = probs.topk(top_k, dim=-1)  # (N, k) each
    if top_k > 1:
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).eps)
    return weights, experts


def aux_loss(x: torch.Tensor, gate_weight: torch.Tensor, experts: torch.Tensor, top_k: int) -> torch.Tensor:
    """DeepSpeed's load-balancing loss of these routes (GShard), for the record (serving ignores it):
    E · Σ_e mean prob_e · share of first choices for top-1 and top-2; for k > 2, E / k · Σ_e mean prob_e ·
    share of all k choices (DeepSpeed's topkgating). x (N, D), experts (N, k)."""
    probs = F.softmax(F.linear(x.float(), gate_weight.float()), dim=-1)  # (N, E)
    E = probs.shape[1]
    chosen = experts[:, :1] if top_k <= 2 else experts
    share = F.one_hot(chosen, E).sum(1).float().mean(0)  # (E,)
    return (probs.mean(0) * share).sum() * (E if top_k <= 2 else E / top_k)


def dropless_one_token(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    experts: Sequence[nn.Module],
    top_k: int,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode at batch 1: x of any shape (..., D) holding one token -> `residual` + the layer's output (the
    output alone without `residual`), x's shape. Routed on the host as `dropless_host` (which serves
    top_k > 1); with a residual, top-1 runs the router's product and, beside it, dense's own ops
    (`h + mlp(x)`) and nothing else."""
    if top_k > 1:
        return dropless_host(x, gate_weight, experts, top_k, residual)
    xf, gw = x, gate_weight
    if x.dtype != torch.float32:  # DeepSpeed's gate computes in float32 (a no-op op avoided for fp32)
        xf, gw = x.float(), gw.float()
    row = F.linear(xf, gw).tolist()  # F.linear: see dropless_host
    while type(row[0]) is list:  # x's leading 1s: unwrapped on the host, an op fewer than a reshape
        row = row[0]
    e, w = _top1(row)
    y = experts[e](x)
    return y.mul_(w) if residual is None else torch.add(residual, y, alpha=w)


def dropless_host(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    experts: Sequence[nn.Module],
    top_k: int,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """A decode step's few tokens (at most HOST_GROUPING_MAX_ROUTES routes), routed on the host: x (..., D)
    -> `residual` + the layer's output (the output alone without `residual`), x's shape. Routing as
    `route`, in float64 on the host from the float32 logits read in one `tolist` (equal to `route` up to
    float32 rounding; exact ties may pick another of the tied experts). Each expert runs once over its
    tokens; each combine weight rides on the add that sums its expert's output into the result."""
    D = x.shape[-1]
    flat = x.reshape(-1, D)  # (N, D)
    xf, gw = flat, gate_weight
    if x.dtype != torch.float32:
        xf, gw = flat.float(), gw.float()
    # F.linear on rows, never on a (D,) vector: the GEMM path every linear of a step takes (docs).
    routes: dict[int, list[tuple[int, float]]] = {}  # expert -> [(token, weight)], in token order
    for t, row in enumerate(F.linear(xf, gw).tolist()):
        for e, w in _top(row, top_k):
            routes.setdefault(e, []).append((t, w))
    out = torch.zeros_like(flat) if residual is None else residual.reshape(-1, D).clone()
    for e, members in routes.items():
        if len(members) == 1:  # slices, not index ops: most experts get one token of a small batch
            ((t, w),) = members
            out[t : t + 1].add_(experts[e](flat[t : t + 1]), alpha=w)
        else:
            tokens = torch.tensor([t for t, _ in members], device=x.device)
            weights = torch.tensor([[w] for _, w in members], dtype=x.dtype, device=x.device)
            out.index_add_(0, tokens, experts[e](flat.index_select(0, tokens)).mul_(weights))
    return out.view_as(x)


def _top(row: list[float], top_k: int) -> list[tuple[int, float]]:
    """[(expert, combine weight)] of one token's logits: `_top1` for top-1, the top_k probabilities
    renormalized over the chosen experts for k >= 2."""
    if top_k == 1:
        return [_top1(row)]
    biggest = max(row)
    top = heapq.nlargest(top_k, range(len(row)), key=row.__getitem__)
    exps = [math.exp(row[e] - biggest) for e in top]
    norm = sum(exps)
    return [(e, v / norm) for e, v in zip(top, exps, strict=True)]


def _top1(row: list[float]) -> tuple[int, float]:
    """(argmax, its softmax probability 1 / Σ_e exp(l_e - l_max)); a plain loop, the fewest Python steps."""
    biggest = max(row)
    total = 0.0
    for v in row:
        total += math.exp(v - biggest)
    return row.index(biggest), 1.0 / total


def dropless_reference(
    x: torch.Tensor, gate_weight: torch.Tensor, experts: Sequence[nn.Module], top_k: int
) -> torch.Tensor:
    """The spec: for each token, Σ_j weight_j · expert_{e_j}(token). x (N, D) -> (N, D)."""
    weights, chosen = route(x, gate_weight, top_k)
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(top_k):
            y = experts[int(chosen[i, j])](x[i : i + 1])  # (1, D)
            out[i] += (weights[i, j].to(x.dtype) * y)[0]
    return out


def dropless_sorted(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    experts: Sequence[nn.Module],
    top_k: int,
    routes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D) -> (out (N, D), per-expert route counts (E,) int64). Routes (weights, experts) may be
    given (from `route`). Each expert runs once, over the contiguous slice of its tokens."""
    weights, chosen = routes if routes is not None else route(x, gate_weight, top_k)
    E = gate_weight.shape[0]
    w = weights.to(x.dtype).reshape(-1, 1)  # (N·k, 1), route r = token r // k, slot r % k
    flat = chosen.reshape(-1)  # (N·k,)
    order = flat.argsort(stable=True)  # routes grouped by expert, in token order within each
    counts = torch.bincount(flat, minlength=E)  # (E,)
    tokens = order // top_k  # (N·k,) the token of each sorted route
    xs = x.index_select(0, tokens)  # (N·k, D)
    ys = torch.empty_like(xs)
    start = 0
    for e, n in enumerate(counts.tolist()):  # the one host read
        if n:
            ys[start : start + n] = experts[e](xs[start : start + n])
        start += n
    ys.mul_(w.index_select(0, order))
    return torch.zeros_like(x).index_add_(0, tokens, ys), counts
