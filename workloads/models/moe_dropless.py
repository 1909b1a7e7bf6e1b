"""Dropless MoE for serving: every token reaches its top_k experts; no capacity, no dense (S, E, C)
dispatch tensor (MegaBlocks' dropless MoE; torchtitan keeps a for-loop expert path beside grouped GEMM).
Details: docs/workloads.md#workloadsmodelsmoe_dropless."""

import heapq
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# At most this many routes (tokens × top_k) are grouped on the host (a decode step's few tokens): the
# ids' one host read replaces the sort, the count and the gather index ops.
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
    """One token, x of any shape (..., D) holding a single row -> `residual` + the layer's output (the
    output alone without `residual`), x's shape. Routing as `route`, in float64 on the host from the
    float32 logits (equal to `route` up to float32 rounding; exact ties may pick another of the tied
    experts). Ops beyond the experts' own: the router's product and its one host read (`tolist`); each
    combine weight rides on the add that sums its expert's output into the result (`alpha`), so with a
    residual, top-1 runs no op that dense's `h + mlp(x)` does not beyond the router."""
    xf, gw = x, gate_weight  # (..., D), (E, D)
    if x.dtype != torch.float32:  # DeepSpeed's gate computes in float32 (a no-op op avoided for fp32)
        xf, gw = x.float(), gw.float()
    # (E,) logits, the one host read. F.linear on x as it comes: in the model (1, 1, D) takes the GEMM
    # path every linear of the step takes; a (D,) vector would take a mat-vec path of its own, measured
    # ~4 µs a layer slower there (its code is cold by the time each layer gets to it).
    row = F.linear(xf, gw).view(-1).tolist()
    biggest = max(row)
    if top_k == 1:  # the softmax probability of the argmax, 1 / Σ_e exp(l_e - l_max): a plain loop, the
        total = 0.0  # fewest Python steps (decode pays each one per MoE layer per token)
        for v in row:
            total += math.exp(v - biggest)
        y = experts[row.index(biggest)](x)
        return y.mul_(1.0 / total) if residual is None else torch.add(residual, y, alpha=1.0 / total)
    top = heapq.nlargest(top_k, range(len(row)), key=row.__getitem__)
    exps = [math.exp(row[e] - biggest) for e in top]
    norm = sum(exps)  # k >= 2: renormalized over the chosen experts
    out = experts[top[0]](x)
    out = out.mul_(exps[0] / norm) if residual is None else torch.add(residual, out, alpha=exps[0] / norm)
    for e, v in zip(top[1:], exps[1:], strict=True):
        out.add_(experts[e](x), alpha=v / norm)
    return out


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
    counts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (N, D) -> (out (N, D), per-expert route counts (E,) int64; on the host-grouped path a CPU tensor,
    or None there when `counts` is False: one tensor less to build per decode call). Routes (weights,
    experts) may be given (from `route`). Each expert runs once, over the contiguous slice of its tokens."""
    weights, chosen = routes if routes is not None else route(x, gate_weight, top_k)
    n_routes, E = chosen.numel(), gate_weight.shape[0]
    w = weights.to(x.dtype).reshape(-1, 1)  # (N·k, 1), route r = token r // k, slot r % k
    if n_routes <= HOST_GROUPING_MAX_ROUTES:
        out, per_expert = _host_grouped(x, w, chosen.reshape(-1).tolist(), experts, top_k, E)
        return out, torch.tensor(per_expert) if counts else None
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


def _host_grouped(x, w, ids: list[int], experts, top_k: int, E: int) -> tuple[torch.Tensor, list[int]]:
    """The few-routes path: group the route ids on the host, one expert call per distinct expert."""
    counts = [0] * E
    for e in ids:
        counts[e] += 1
    if len(ids) == 1:  # one token, top-1: no gather or scatter at all
        return experts[ids[0]](x) * w, counts
    out = torch.zeros_like(x)
    for e in dict.fromkeys(ids):
        routes = [r for r, r_e in enumerate(ids) if r_e == e]
        idx = torch.tensor(routes, device=x.device)
        tokens = idx // top_k
        out.index_add_(0, tokens, experts[e](x.index_select(0, tokens)) * w.index_select(0, idx))
    return out, counts
