"""Metric arithmetic of the benchmark jobs (DESIGN.md "Metrics every job records"), as pure functions.
Details: docs/workloads.md#workloadsjobsmetrics."""

import math
from collections.abc import Mapping

import numpy as np

from workloads.jobs.timing import TimingStats
from workloads.models.accounting import ParamCount, l3_row_width
from workloads.models.config import ModelConfig


def throughput_metrics(stats: TimingStats, tokens_per_step: int) -> dict[str, float]:
    """train/tokens_per_s and the step-time median/p10/p90 from the post-warm-up step times."""
    return {
        "train/tokens_per_s": tokens_per_step / stats.median_s,
        "train/step_time_s": stats.median_s,
        "train/step_time_s_p10": stats.p10_s,
        "train/step_time_s_p90": stats.p90_s,
    }


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float, world_size: int = 1) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the peak of all `world_size` devices."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token / (peak_flops * world_size)


def moe_balance(
    expert_tokens: np.ndarray,
    dropped_routes: float,
    aux_loss_sum: float,
    n_steps: int,
    dropped_tokens: float | None = None,
    token_passes: float | None = None,
) -> dict[str, float]:
    """MoE load balance from token counts already summed over ranks and steps (the whole-run figure).

    expert_tokens: (n_moe_layers, num_experts) routes per expert. For each layer max/mean and the
    coefficient of variation (population std / mean) are taken, then averaged over layers.
    dropped_routes: routes over capacity (summed the same way); lb/dropped_route_frac is of all routes.
    dropped_tokens / token_passes: tokens that lost all top_k routes in a layer / tokens × MoE layers;
    lb/dropped_token_frac is their ratio (only when given: it needs the gate's per-token routes).
    aux_loss_sum: Σ over steps of the aux loss added to the LM loss (rank-averaged); reported per step.
    """
    counts = np.asarray(expert_tokens, dtype=np.float64)
    if counts.ndim != 2 or counts.size == 0:
        raise ValueError(f"expert_tokens must be (layers, experts), got shape {counts.shape}")
    mean = counts.mean(axis=1)
    safe = np.where(mean > 0, mean, 1.0)
    routes = counts.sum()
    out = {
        "lb/expert_tokens_max_over_mean": float(np.mean(counts.max(axis=1) / safe)),
        "lb/expert_tokens_cv": float(np.mean(counts.std(axis=1) / safe)),
        "lb/dropped_route_frac": float(dropped_routes / routes) if routes > 0 else 0.0,
        "lb/aux_loss": float(aux_loss_sum / max(n_steps, 1)),
    }
    if dropped_tokens is not None:
        out["lb/dropped_token_frac"] = float(dropped_tokens / token_passes) if token_passes else 0.0
    return out


def step_summary(values: np.ndarray, key: str) -> dict[str, float]:
    """<key>_step_median / _step_p90 / _step_max of a per-optimizer-step series (linear-interpolated p90)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{key}: need a non-empty 1-D series of per-step values, got shape {v.shape}")
    return {
        f"{key}_step_median": float(np.median(v)),
        f"{key}_step_p90": float(np.percentile(v, 90)),
        f"{key}_step_max": float(v.max()),
    }


def moe_step_balance(step_tokens: np.ndarray) -> dict[str, float]:
    """Per-step MoE balance: step_tokens (steps, layers, experts) routes of each optimizer step, all
    ranks summed. Each step's max/mean and CV are averaged over layers (as `moe_balance` does for the
    whole run), then summarized over steps (`step_summary`): a per-step imbalance that averages out over
    the run shows here and not in the whole-run figure."""
    counts = np.asarray(step_tokens, dtype=np.float64)
    if counts.ndim != 3 or counts.size == 0:
        raise ValueError(f"step_tokens must be (steps, layers, experts), got shape {counts.shape}")
    mean = counts.mean(axis=2)
    safe = np.where(mean > 0, mean, 1.0)
    max_over_mean = (counts.max(axis=2) / safe).mean(axis=1)  # (steps,)
    cv = (counts.std(axis=2) / safe).mean(axis=1)
    return step_summary(max_over_mean, "lb/expert_tokens_max_over_mean") | step_summary(
        cv, "lb/expert_tokens_cv"
    )


def l3_step_balance(rows_sum: np.ndarray, n_positions: np.ndarray, row_bytes: float) -> dict[str, float]:
    """Per-step L3 load: rows_sum / n_positions (per step, over all L3 layers and ranks) is the mean rows a
    position reads in one L3 layer that step; bytes per token as in `l3_balance`. Summarized over steps."""
    rows, n = np.asarray(rows_sum, dtype=np.float64), np.asarray(n_positions, dtype=np.float64)
    if rows.shape != n.shape or (n <= 0).any():
        raise ValueError(
            f"rows_sum and n_positions must be equal-length with n > 0, got {rows.shape}, {n.shape}"
        )
    mean_rows = rows / n
    return step_summary(mean_rows, "lb/l3_rows_per_token_mean") | step_summary(
        mean_rows * row_bytes, "lb/l3_bytes_per_token"
    )


def l3_batch_stats(token_ids: np.ndarray, counts: np.ndarray) -> tuple[int, int, int, int]:
    """(Σ rows over positions, max rows of one position, positions, distinct rows) of one batch for one
    L3 layer whose token t owns counts[t] rows."""
    ids = np.asarray(token_ids).reshape(-1)
    rows = np.asarray(counts)[ids]
    distinct = np.unique(ids)
    return int(rows.sum()), int(rows.max(initial=0)), int(ids.size), int(np.asarray(counts)[distinct].sum())


def l3_balance(
    rows_sum: float,
    rows_max: float,
    n_positions: float,
    unique_rows: float,
    n_steps: int,
    row_bytes: float,
) -> dict[str, float]:
    """L3 load from totals over all L3 layers, steps and ranks.

    rows_sum / n_positions: mean rows a position reads in one L3 layer (n_positions counts one per layer).
    rows_max: most rows one position read in one layer. unique_rows: Σ distinct rows gathered per step
    (all L3 layers), averaged over steps. bytes per token: rows read per token over all L3 layers times
    the bytes of one row (key + value), i.e. the table traffic without deduplication.
    """
    if n_positions <= 0:
        raise ValueError(f"n_positions must be > 0, got {n_positions}")
    mean_rows = rows_sum / n_positions
    return {
        "lb/l3_rows_per_token_mean": float(mean_rows),
        "lb/l3_rows_per_token_max": float(rows_max),
        "lb/l3_unique_rows_per_step": float(unique_rows / max(n_steps, 1)),
        "lb/l3_bytes_per_token": float(mean_rows * row_bytes),
    }


def l3_row_bytes(cfg: ModelConfig, element_bytes: int) -> int:
    """Bytes of one row over all L3 layers: (dim + d_emb, or dim when tied) · element size · layers."""
    return l3_row_width(cfg) * element_bytes * len(cfg.l3.positions)


def eval_metrics(loss_sum: float, n_tokens: float, bytes_per_token: float) -> dict[str, float]:
    """eval/val_loss (mean token cross-entropy, nats), eval/val_ppl = exp(val_loss) and eval/val_bpb =
    val_loss / (ln 2 · bytes_per_token): bits per UTF-8 byte of the split, comparable across tokenizers."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    if bytes_per_token <= 0:
        raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token}")
    loss = loss_sum / n_tokens
    return {
        "eval/val_loss": float(loss),
        "eval/val_ppl": float(math.exp(min(loss, 700.0))),
        "eval/val_bpb": float(loss / (math.log(2) * bytes_per_token)),
    }


def accounting_metrics(pc: ParamCount) -> dict[str, float]:
    """The measured accounting of a job (L3_SPEC §5): params_active (L3 rows at the corpus-weighted mean of
    the job's allocation), params_active_max / _min (a token with the most / fewest rows), params_total,
    sparsity. A count without a corpus (`pc.estimated`) is refused: a job always has its data."""
    if pc.estimated:
        raise ValueError(
            "a job's params_active must be weighted by its corpus (count_params had no token_freqs)"
        )
    return {
        "params_active": float(pc.active),
        "params_active_max": float(pc.active_max),
        "params_active_min": float(pc.active_min),
        "params_total": float(pc.total),
        "sparsity": pc.sparsity,
    }


def param_bytes_metrics(bytes_by_category: Mapping[str, int]) -> dict[str, float]:
    """mem/params_bytes/<category> for each category."""
    return {f"mem/params_bytes/{name}": float(n) for name, n in bytes_by_category.items()}
