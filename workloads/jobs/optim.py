"""AdamW parameter groups by category and the warmup + cosine learning-rate schedule of the train job.
Details: docs/workloads.md#workloadsjobsoptim."""

import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn as nn

from workloads.jobs.row_sparse import MixedOptimizer, RowSparseAdam, RowwiseAdagrad, SparseGradAdamW

L3Optimizer = Literal["adamw", "sparse_adam", "rowwise_adagrad"]
L3_OPTIMIZERS: tuple[str, ...] = ("adamw", "sparse_adam", "rowwise_adagrad")

PARAM_CATEGORIES: tuple[str, ...] = ("dense", "l3_tables", "experts", "embeddings")


def param_category(name: str) -> str:
    """The accounting category of a parameter of `Transformer`, from its qualified name."""
    leaf = name.rsplit(".", 1)[-1]
    if ".l3." in f".{name}" and leaf in ("keys", "values"):
        return "l3_tables"
    if "deepspeed_experts" in name:
        return "experts"
    if name.startswith(("tok_emb.", "lm_head.")):
        return "embeddings"
    if name.startswith("fgram."):  # SCONE's A_fgram
        return "fgram_model"
    return "dense"


def named_params_by_category(model: nn.Module) -> Iterator[tuple[str, str, nn.Parameter]]:
    """(category, name, parameter) for every parameter once (tied weights are listed once)."""
    for name, p in model.named_parameters():
        yield param_category(name), name, p


def param_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of this rank's parameters per category (every category present, 0 when absent)."""
    out = dict.fromkeys(PARAM_CATEGORIES, 0)
    for category, _, p in named_params_by_category(model):
        out[category] = out.get(category, 0) + p.numel() * p.element_size()
    return out


def _state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (AdamW: exp_avg, exp_avg_sq, step)."""
    return sum(_state_bytes(state) for state in optimizer.state.values())


def optimizer_bytes_by_category(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, int]:
    """`optimizer_bytes` split by the category of the parameter each state belongs to (every category
    present). State of a tensor that is not a parameter of `model` (a wrapper's master copy) is counted
    under "unattributed", present only when nonzero, so the values always sum to `optimizer_bytes`."""
    category = {id(p): c for c, _, p in named_params_by_category(model)}
    out = dict.fromkeys(PARAM_CATEGORIES, 0)
    for p, state in optimizer.state.items():
        key = category.get(id(p), "unattributed")
        out[key] = out.get(key, 0) + _state_bytes(state)
    if out.get("unattributed") == 0:
        del out["unattributed"]
    return out


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    l3_lr: float | None = None,
    l3_weight_decay: float | None = None,
    embedding_lr: float | None = None,
    embedding_weight_decay: float | None = None,
) -> list[dict]:
    """AdamW groups: matrices with decay, vectors without, and L3 tables / embeddings with their own
    settings (None: same as the matrices). Each group has a "name" (DeepSpeed's MoE split needs one)."""
    special = {
        "l3_tables": (l3_lr, l3_weight_decay),
        "embeddings": (embedding_lr, embedding_weight_decay),
    }
    groups: dict[str, dict] = {}
    for category, _, p in named_params_by_category(model):
        if not p.requires_grad:
            continue
        if category in special:
            g_lr, g_wd = special[category]
            key, g_lr, g_wd = category, lr if g_lr is None else g_lr, weight_decay if g_wd is None else g_wd
        elif p.ndim < 2:
            key, g_lr, g_wd = "no_decay", lr, 0.0
        else:
            key, g_lr, g_wd = "decay", lr, weight_decay
        group = groups.setdefault(key, {"name": key, "params": [], "lr": g_lr, "weight_decay": g_wd})
        group["params"].append(p)
    return list(groups.values())


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """lr multiplier: linear from 1/warmup to 1 over `warmup_steps`, then cosine down to `min_ratio` at
    `total_steps` (and flat after). `step` counts optimizer steps already taken."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    groups: list[dict],
    betas: tuple[float, float],
    fused: bool = False,
    l3_optimizer: L3Optimizer = "adamw",
    sparse_tables: bool = False,
) -> torch.optim.Optimizer:
    """AdamW over `groups` (`SparseGradAdamW` when `sparse_tables`: the L3 tables' gradients are sparse,
    one process); with a row-sparse `l3_optimizer`, the "l3_tables" group goes to that optimizer instead
    (same lr / weight decay settings) and both step as one `MixedOptimizer`."""
    if l3_optimizer not in L3_OPTIMIZERS:
        raise ValueError(f"l3_optimizer must be one of {L3_OPTIMIZERS}, got {l3_optimizer!r}")
    groups = [g for g in groups if g["params"]]
    tables = [g for g in groups if g["name"] == "l3_tables"]
    if l3_optimizer == "adamw" or not tables:
        adamw = SparseGradAdamW if sparse_tables and tables else torch.optim.AdamW
        return adamw(groups, lr=groups[0]["lr"], betas=betas, fused=fused or None)
    dense = [g for g in groups if g["name"] != "l3_tables"]
    (table_group,) = tables
    if l3_optimizer == "sparse_adam":
        sparse: torch.optim.Optimizer = RowSparseAdam([table_group], lr=table_group["lr"], betas=betas)
    else:
        sparse = RowwiseAdagrad([table_group], lr=table_group["lr"])
    if not dense:
        return sparse
    adamw = torch.optim.AdamW(dense, lr=dense[0]["lr"], betas=betas, fused=fused or None)
    return MixedOptimizer([adamw, sparse])


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        return warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
