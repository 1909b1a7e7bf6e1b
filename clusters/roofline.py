"""Roofline time model: training step time, tokens/s, wall time, GPU-hours and cost; decode step and the
L3 offload prefetch window (L3_SPEC §4).
Details: docs/clusters.md#clustersroofline."""

import math
from dataclasses import dataclass

from clusters import capacity
from clusters.catalog import Accelerator
from clusters.shapes import InferSetup, ModelShape, TrainSetup
from clusters.spec import Cluster

# The paper's 800M L3 model trains at 135K tok/s on 8×A100 (dense: 155K) with plain PyTorch: with
# 6·803M + 12·20·1024·2048 ≈ 5.3 GFLOP/token that is 5.3e9 · 135e3 / (8 · 312e12) ≈ 0.29 MFU (dense 0.33).
DEFAULT_MFU = 0.3


def compute_dtype(precision: str) -> str:
    return "float32" if precision == "fp32" else "bfloat16"


@dataclass(frozen=True)
class StepTime:
    compute_s: float
    memory_s: float
    comm_s: float
    tokens_per_step: int  # all GPUs, one optimizer step
    flops_per_token: float
    flops_per_s: float  # per GPU, the rate compute_s assumes

    @property
    def step_s(self) -> float:
        return max(self.compute_s, self.memory_s, self.comm_s)

    @property
    def bound(self) -> str:
        return max((self.compute_s, "compute"), (self.memory_s, "memory"), (self.comm_s, "communication"))[1]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s


def _link_bytes_per_s(acc: Accelerator, setup: TrainSetup, cluster: Cluster | None) -> float | None:
    group = cluster.gpu_group if cluster is not None else None
    within_node = group is None or setup.n_gpus <= group.gpus_per_node
    if not within_node:
        return cluster.interconnect_bytes_per_s  # None: unknown, the caller asks for it
    if acc.nvlink_bytes_per_s:
        return acc.nvlink_bytes_per_s / 2
    return acc.host_link.bytes_per_s if acc.host_link else None  # no NVLink: GPUs talk through PCIe


def _comm_s(model: ModelShape, setup: TrainSetup, acc: Accelerator, cluster: Cluster | None) -> float:
    n = setup.n_gpus
    if n == 1:
        return 0.0
    link = _link_bytes_per_s(acc, setup, cluster)
    if link is None:
        raise ValueError(f"no link bandwidth known for {n} × {acc.name}; set interconnect_bytes_per_s")
    g_bytes = capacity.STATE_BYTES[setup.precision][1]
    replicated, experts = capacity._local_params(model, setup)
    volume = 2 * (n - 1) / n * g_bytes * replicated
    expert_dp = n // setup.ep_size
    if expert_dp > 1:
        volume += 2 * (expert_dp - 1) / expert_dp * g_bytes * experts
    if model.moe and setup.ep_size > 1:
        a = 4 if setup.precision == "fp32" else 2
        slots = capacity.moe_slots(model, setup.tokens_per_micro_batch)
        per_a2a = slots * model.dim * a * (setup.ep_size - 1) / setup.ep_size
        volume += 4 * model.moe.n_layers * per_a2a * setup.grad_accum
    return volume / link


def _memory_s(model: ModelShape, setup: TrainSetup, acc: Accelerator) -> float:
    if acc.hbm_bytes_per_s is None:
        return 0.0
    p_b, g_b, o_b = capacity.STATE_BYTES[setup.precision]
    replicated, experts = capacity._local_params(model, setup)
    local = replicated + experts
    a = 4 if setup.precision == "fp32" else 2
    weights = setup.grad_accum * local * (2 * a + 2 * g_b)  # read twice, gradient read-modify-write
    optimizer = 2 * local * (p_b + g_b + o_b)
    acts = 2 * setup.grad_accum * sum(capacity.activation_bytes(model, setup).values())
    return (weights + optimizer + acts) / acc.hbm_bytes_per_s


def train_step_time(
    model: ModelShape,
    setup: TrainSetup,
    acc: Accelerator,
    *,
    mfu: float = DEFAULT_MFU,
    cluster: Cluster | None = None,
    achieved_flops_per_s: float | None = None,
) -> StepTime:
    """Roofline step time of one optimizer step (module docstring). `achieved_flops_per_s` (per GPU, from
    `calibrate`) replaces peak × mfu; without it the accelerator needs a peak for the precision."""
    if achieved_flops_per_s is None:
        if not 0 < mfu <= 1:
            raise ValueError(f"mfu must lie in (0, 1], got {mfu}")
        peak = acc.peak(compute_dtype(setup.precision))
        if peak is None:
            raise ValueError(f"{acc.name!r} has no {setup.precision} peak; calibrate on measured runs first")
        achieved_flops_per_s = peak * mfu
    flops = model.train_flops_per_token(setup.seq_len)
    executed = flops * (4 / 3 if setup.activation_checkpointing else 1.0)
    tokens_per_gpu = setup.micro_batch * setup.seq_len * setup.grad_accum
    return StepTime(
        compute_s=tokens_per_gpu * executed / achieved_flops_per_s,
        memory_s=_memory_s(model, setup, acc),
        comm_s=_comm_s(model, setup, acc, cluster),
        tokens_per_step=setup.tokens_per_step,
        flops_per_token=flops,
        flops_per_s=achieved_flops_per_s,
    )


@dataclass(frozen=True)
class TrainCost:
    tokens: float
    steps: int
    wall_s: float
    gpu_hours: float
    dollars: float | None


def train_cost(
    step: StepTime, setup: TrainSetup, tokens: float, price_per_gpu_hour: float | None
) -> TrainCost:
    """Time, GPU-hours and (with a price) dollars to train `tokens` tokens at this step time."""
    if tokens <= 0:
        raise ValueError(f"tokens must be > 0, got {tokens}")
    steps = math.ceil(tokens / step.tokens_per_step)
    wall_s = steps * step.step_s
    gpu_hours = wall_s / 3600 * setup.n_gpus
    dollars = None if price_per_gpu_hour is None else gpu_hours * price_per_gpu_hour
    return TrainCost(tokens=tokens, steps=steps, wall_s=wall_s, gpu_hours=gpu_hours, dollars=dollars)


@dataclass(frozen=True)
class DecodeTime:
    """One decode step (one new token per sequence) on one GPU, at the roofline (no MFU discount)."""

    step_s: float
    tokens_per_s: float
    copy_s: float  # offloaded L3 rows over the host link
    window_s: float  # roofline time of the blocks before the first L3 layer
    hidden: bool  # copy_s <= window_s: the copy overlaps fully (L3_SPEC §4)

    @property
    def offload_step_s(self) -> float:
        """Step time with offloaded tables: the part of the copy the window does not hide is exposed."""
        return self.step_s + max(0.0, self.copy_s - self.window_s)


def _roofline_s(flops: float, n_bytes: float, acc: Accelerator, dtype: str) -> float:
    return max(flops / acc.peak(dtype), n_bytes / acc.hbm_bytes_per_s)


def decode_step(model: ModelShape, setup: InferSetup, acc: Accelerator) -> DecodeTime:
    """Decode-step roofline: weights touched + KV cache read vs 2·N_active FLOPs per token; and the
    offload copy time vs the prefetch window. Blocks are taken as equal shares of the dense parameters."""
    if acc.hbm_bytes_per_s is None or acc.peak("bfloat16") is None:
        raise ValueError(f"decode timing needs a GPU with a bf16 peak and HBM bandwidth, got {acc.name!r}")
    e, B, L = setup.dtype_bytes, setup.batch, model.n_layers
    experts = 0.0
    if model.moe:
        touched = min(model.moe.num_experts, B * model.moe.top_k) / model.moe.num_experts
        experts = touched * model.params_experts
    l3_rows = model.l3.n_layers * capacity.l3_unique_rows(model, B) * model.l3.row_width if model.l3 else 0.0
    kv = capacity.kv_cache_bytes(model, B, setup.context_len, e)
    weight_bytes = e * (model.params_dense + model.params_lm_head + experts + l3_rows)
    attn_flops = 4.0 * L * model.n_heads * model.head_dim * setup.context_len * B
    step_s = _roofline_s(2.0 * model.params_active * B + attn_flops, weight_bytes + kv, acc, "bfloat16")
    n_before = model.l3.first_block + 1 if model.l3 else 0
    block_bytes = e * model.params_dense / L + kv / L
    block_flops = 2.0 * model.params_dense / L * B + attn_flops / L
    window_s = n_before * _roofline_s(block_flops, block_bytes, acc, "bfloat16")
    copy_s = 0.0
    if model.l3 and setup.l3_placement == "offload":
        if acc.host_link is None:
            raise ValueError(f"{acc.name!r} has no host link in the catalog")
        copy_s = capacity.infer_memory(model, setup).l3_bytes_per_step / acc.host_link.bytes_per_s
    return DecodeTime(
        step_s=step_s, tokens_per_s=B / step_s, copy_s=copy_s, window_s=window_s, hidden=copy_s <= window_s
    )
