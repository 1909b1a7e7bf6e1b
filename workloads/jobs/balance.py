"""Load-balance counts summed over ranks once, at the end of a run: MoE routes, drops and aux loss; L3
rows (the max max-reduced); per-step series. Each becomes metrics through `metrics`."""

import numpy as np
import torch

from workloads.jobs import distributed, metrics


def all_reduce_moe_counts(
    expert_tokens: torch.Tensor, drops: torch.Tensor, aux_sum: torch.Tensor, token_passes: float
) -> tuple[np.ndarray, float, float, float, float]:
    """This rank's (layers, experts) routes, [dropped tokens, dropped routes], Σ aux loss and token passes
    (tokens × MoE layers) summed over ranks in one all-reduce → (routes of all ranks, dropped tokens,
    dropped routes, token passes, Σ aux loss averaged over ranks)."""
    extra = torch.cat([drops.double(), aux_sum.double()[None], torch.tensor([float(token_passes)])])
    packed = torch.cat([expert_tokens.flatten().double(), extra.to(expert_tokens.device)])
    packed = distributed.all_reduce_sum(packed).cpu().numpy()
    tokens = packed[:-4].reshape(tuple(expert_tokens.shape))
    dropped_tokens, dropped_routes, aux, passes = packed[-4:]
    return (
        tokens,
        float(dropped_tokens),
        float(dropped_routes),
        float(passes),
        float(aux) / distributed.world().size,
    )


def reduce_moe_balance(
    expert_tokens: torch.Tensor, drops: torch.Tensor, aux_sum: torch.Tensor, token_passes: float, n_steps: int
) -> dict[str, float]:
    """Whole-run MoE load-balance metrics of all ranks (`all_reduce_moe_counts`, `metrics.moe_balance`)."""
    tokens, d_tok, d_routes, passes, aux = all_reduce_moe_counts(expert_tokens, drops, aux_sum, token_passes)
    return metrics.moe_balance(tokens, d_routes, aux, n_steps, dropped_tokens=d_tok, token_passes=passes)


def reduce_step_series(per_step: list[torch.Tensor] | np.ndarray, device: torch.device) -> np.ndarray:
    """Per-step counts of this rank, (steps, ...), summed over ranks in one all-reduce."""
    stacked = torch.stack(list(per_step)) if isinstance(per_step, list) else torch.from_numpy(per_step)
    return distributed.all_reduce_sum(stacked.double().to(device)).cpu().numpy()


def reduce_l3_balance(l3: np.ndarray, n_steps: int, row_bytes: int, device: torch.device) -> dict[str, float]:
    """L3 load of all ranks from this rank's [Σ rows, positions, Σ distinct rows per step, max rows]: sums
    all-reduced, the max max-reduced. Distinct rows are counted per rank (each rank gathers its own)."""
    sums = distributed.all_reduce_sum(torch.tensor(l3[:3], dtype=torch.float64, device=device))
    peak = torch.tensor(l3[3], dtype=torch.float64, device=device)
    if distributed.world().size > 1:
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    rows_sum, n_positions, unique = sums.tolist()
    return metrics.l3_balance(rows_sum, float(peak), n_positions, unique, n_steps, row_bytes)
