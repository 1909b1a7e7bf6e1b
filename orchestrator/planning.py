"""Glue between the model family and the capacity model: `ModelConfig` -> `clusters.shapes.ModelShape`,
and `plan_training` / `plan_inference`, which size one model on one cluster (memory, fit, GPUs, time).

clusters/ works from plain numbers and never imports workloads; this module (orchestrator side) may import
both. Parameter counts come from `workloads.models.accounting.count_params` (L3_SPEC §5).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from clusters import capacity, roofline
from clusters.calibration import Calibration
from clusters.catalog import Accelerator
from clusters.shapes import InferSetup, L3Shape, ModelShape, MoEShape, Precision, TrainSetup
from clusters.spec import Cluster
from workloads.models.accounting import count_params, l3_row_width
from workloads.models.config import ModelConfig


def model_shape(
    cfg: ModelConfig,
    name: str = "model",
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None = None,
) -> ModelShape:
    """The capacity model's description of `cfg`; token_freqs / l3_counts weight the L3 rows per token
    exactly as in `count_params` (without them: budget / vocab_size rows per token)."""
    pc = count_params(cfg, token_freqs=token_freqs, l3_counts=l3_counts)
    l3 = moe = None
    if cfg.l3 is not None:
        width = l3_row_width(cfg)
        n_l3 = len(cfg.l3.positions)
        mean_rows = pc.active_by_category["l3_tables"] / (width * n_l3)
        max_rows = (pc.active_max - pc.active + pc.active_by_category["l3_tables"]) / (width * n_l3)
        l3 = L3Shape(
            n_layers=n_l3,
            rows=cfg.l3.budget,
            row_width=width,
            d_emb=cfg.l3.d_emb,
            d_up=cfg.l3.d_up,
            rows_per_token_mean=mean_rows,
            rows_per_token_max=max(1, round(max_rows)),
            first_block=cfg.l3.positions[0],
        )
    if cfg.moe is not None:
        m = cfg.moe
        moe = MoEShape(
            n_layers=len(m.positions),
            num_experts=m.num_experts,
            top_k=m.top_k,
            ffn_dim=m.ffn_dim,
            capacity_factor=m.capacity_factor,
            min_capacity=m.min_capacity,
        )
    cat = pc.by_category
    return ModelShape(
        name=name,
        vocab_size=cfg.vocab_size,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        ffn_dim=cfg.ffn_dim,
        max_seq_len=cfg.max_seq_len,
        tie_embeddings=cfg.tie_embeddings,
        params_dense=cat["dense"],
        params_embeddings=cat["embeddings"],
        params_l3_tables=cat["l3_tables"],
        params_experts=cat["experts"],
        params_active=pc.active,
        l3=l3,
        moe=moe,
    )


@dataclass(frozen=True)
class TrainPlan:
    """One model on one cluster: the setup that was sized, its memory, fit, and time for `tokens`."""

    model: ModelShape
    accelerator: Accelerator
    setup: TrainSetup  # with n_gpus = the GPUs used
    memory: capacity.TrainMemory
    capacity_bytes: float
    fits: bool
    min_gpus: int | None  # fewest GPUs that fit with this setup's parallelism (None: none do)
    max_micro_batch: int  # largest micro-batch that fits on setup.n_gpus
    step: roofline.StepTime | None  # None when the accelerator has no peak and no calibration
    cost: roofline.TrainCost | None


def _choose_setup(
    shape: ModelShape, setup: TrainSetup, cap: float, max_gpus: int, zero_stage: int | None
) -> tuple[TrainSetup, int | None]:
    """With zero_stage None try DDP, ZeRO-1, ZeRO-2 and keep the first that fits on the fewest GPUs."""
    stages = (0, 1, 2) if zero_stage is None else (zero_stage,)
    best: tuple[TrainSetup, int | None] | None = None
    for stage in stages:
        trial = replace(setup, zero_stage=stage)
        n = capacity.min_gpus(shape, trial, cap, max_gpus)
        if n is not None and (best is None or best[1] is None or n < best[1]):
            best = (trial, n)
    return best if best is not None else (replace(setup, zero_stage=stages[-1]), None)


def plan_training(
    shape: ModelShape,
    cluster: Cluster,
    *,
    tokens: float,
    micro_batch: int = 8,
    seq_len: int | None = None,
    n_gpus: int | None = None,
    zero_stage: int | None = None,
    ep_size: int = 1,
    precision: Precision = "amp-bf16",
    activation_checkpointing: bool = False,
    mfu: float = roofline.DEFAULT_MFU,
    headroom: float = capacity.DEFAULT_HEADROOM,
    calibration: Calibration | None = None,
) -> TrainPlan:
    """Size a training job: memory per GPU, fit, fewest GPUs, largest micro-batch, step time and cost.

    n_gpus None uses every GPU of the cluster's largest GPU pool (data parallel); zero_stage None picks the
    lowest ZeRO stage that fits on the fewest GPUs. A CPU-only cluster plans against its host memory.
    """
    acc = cluster.accelerator
    group = cluster.gpu_group
    max_gpus = group.gpus if group else 1
    memory_bytes = None if acc.is_gpu else cluster.nodes[0].memory_bytes
    cap = capacity.usable_bytes(acc, headroom, memory_bytes)
    if calibration is not None:
        cap = cap / calibration.memory_scale(acc.name)
    base = TrainSetup(
        micro_batch=micro_batch,
        seq_len=seq_len or shape.max_seq_len,
        n_gpus=max_gpus if n_gpus is None else n_gpus,
        ep_size=ep_size,
        precision=precision,
        activation_checkpointing=activation_checkpointing,
    )
    chosen, fewest = _choose_setup(shape, base, cap, max_gpus, zero_stage)
    memory = capacity.train_memory(shape, chosen)
    step = cost = None
    eff = calibration.flops_per_s(acc, precision) if calibration is not None else None
    if eff is not None or acc.peak(roofline.compute_dtype(precision)) is not None:
        step = roofline.train_step_time(
            shape, chosen, acc, mfu=mfu, cluster=cluster, achieved_flops_per_s=eff
        )
        cost = roofline.train_cost(step, chosen, tokens, cluster.price_per_gpu_hour)
    return TrainPlan(
        model=shape,
        accelerator=acc,
        setup=chosen,
        memory=memory,
        capacity_bytes=cap,
        fits=memory.peak <= cap,
        min_gpus=fewest,
        max_micro_batch=capacity.max_micro_batch(shape, chosen, cap),
        step=step,
        cost=cost,
    )


def plan_inference(
    shape: ModelShape, cluster: Cluster, setup: InferSetup, headroom: float = capacity.DEFAULT_HEADROOM
) -> tuple[capacity.InferMemory, roofline.DecodeTime | None, bool]:
    """(memory, decode-step timing or None on CPU, fits on one device) for batched decoding."""
    acc = cluster.accelerator
    memory_bytes = None if acc.is_gpu else cluster.nodes[0].memory_bytes
    mem = capacity.infer_memory(shape, setup)
    timing = roofline.decode_step(shape, setup, acc) if acc.is_gpu else None
    return mem, timing, mem.device_total <= capacity.usable_bytes(acc, headroom, memory_bytes)
