"""Glue between the model family and the capacity model: `ModelConfig` -> `clusters.shapes.ModelShape`,
and `plan_training` / `plan_inference`, which size one model on one cluster (memory, fit, GPUs, time).
Details: docs/orchestrator.md#orchestratorplanningplan."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from clusters import capacity, roofline
from clusters.calibration import Calibration
from clusters.catalog import Accelerator
from clusters.shapes import InferSetup, L3Shape, ModelShape, MoEShape, OptimizerImpl, Precision, TrainSetup
from clusters.spec import Cluster
from orchestrator.suites.expansion import load_suite
from workloads import api as workloads


def model_shape(
    cfg: workloads.ModelConfig,
    name: str = "model",
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None = None,
) -> ModelShape:
    """The capacity model's description of `cfg` (`workloads.api.model_facts`); token_freqs / l3_counts
    weight the L3 rows per token exactly as in `count_params` (without them: budget / vocab_size rows)."""
    facts = workloads.model_facts(cfg, token_freqs, l3_counts)
    l3, moe = facts.pop("l3"), facts.pop("moe")
    return ModelShape(name=name, **facts, l3=l3 and L3Shape(**l3), moe=moe and MoEShape(**moe))


AUTO_MAX_MICRO_BATCH = 8  # with micro_batch=None: the largest that fits, up to this


@dataclass(frozen=True)
class TrainPlan:
    """One model on one cluster: the setup chosen, its memory per GPU, fit, and time for `tokens`."""

    model: ModelShape
    accelerator: Accelerator
    setup: TrainSetup  # n_gpus = the GPUs used; zero_stage / micro_batch / checkpointing as chosen
    memory: capacity.TrainMemory
    capacity_bytes: float
    fits: bool
    min_gpus: int | None  # fewest GPUs that fit with ZeRO-2 at this micro-batch (None: not on this pool)
    max_micro_batch: int  # largest micro-batch that fits with this setup (0: none)
    step: roofline.StepTime | None  # None when the accelerator has no peak and no calibration
    cost: roofline.TrainCost | None


def choose_setup(
    shape: ModelShape,
    base: TrainSetup,
    cap: float,
    *,
    micro_batch: int | None,
    zero_stage: int | None,
    activation_checkpointing: bool | None,
) -> tuple[TrainSetup, bool]:
    """The cheapest setup that fits: without checkpointing before with it, then the lowest ZeRO stage,
    then the largest micro-batch up to AUTO_MAX_MICRO_BATCH. Given values are kept. (setup, fits)."""
    ckpts = (False, True) if activation_checkpointing is None else (activation_checkpointing,)
    stages = (0, 1, 2) if zero_stage is None else (zero_stage,)
    trial = base
    for ckpt in ckpts:
        for stage in stages:
            trial = replace(
                base, zero_stage=stage, activation_checkpointing=ckpt, micro_batch=micro_batch or 1
            )
            if micro_batch is None:
                best = capacity.max_micro_batch(shape, trial, cap, limit=AUTO_MAX_MICRO_BATCH)
                if best:
                    return replace(trial, micro_batch=best), True
            elif capacity.fits(shape, trial, cap):
                return trial, True
    return trial, False


def plan_training(
    shape: ModelShape,
    cluster: Cluster,
    *,
    tokens: float,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    n_gpus: int | None = None,
    zero_stage: int | None = None,
    ep_size: int = 1,
    precision: Precision | None = None,
    activation_checkpointing: bool | None = None,
    grad_accum: int = 1,
    optimizer_impl: OptimizerImpl = "fused",
    mfu: float = roofline.DEFAULT_MFU,
    headroom: float = capacity.DEFAULT_HEADROOM,
    calibration: Calibration | None = None,
) -> TrainPlan:
    """Size a training job: memory per GPU, fit, fewest GPUs, largest micro-batch, step time and cost.

    n_gpus None uses every GPU of the cluster's largest GPU pool (data parallel). None for micro_batch,
    zero_stage or activation_checkpointing lets `choose_setup` pick. A CPU-only cluster plans against
    its host memory (time then needs a calibration: the catalog has no CPU peak). optimizer_impl "fused"
    is what the train job uses (workloads/jobs/loop.py builds a fused AdamW).
    """
    acc = cluster.accelerator
    group = cluster.gpu_group
    max_gpus = group.gpus if group else 1
    precision = precision or ("amp-bf16" if acc.is_gpu else "fp32")  # what the train job runs with
    memory_bytes = None if acc.is_gpu else cluster.nodes[0].memory_bytes
    cap = capacity.usable_bytes(acc, headroom, memory_bytes)
    if calibration is not None:
        cap = cap / calibration.memory_scale(acc.name)
    base = TrainSetup(
        micro_batch=micro_batch or 1,
        seq_len=seq_len or shape.max_seq_len,
        n_gpus=max_gpus if n_gpus is None else n_gpus,
        ep_size=ep_size,
        precision=precision,
        grad_accum=grad_accum,
        optimizer_impl=optimizer_impl,
    )
    setup, fits = choose_setup(
        shape,
        base,
        cap,
        micro_batch=micro_batch,
        zero_stage=zero_stage,
        activation_checkpointing=activation_checkpointing,
    )
    step = cost = None
    eff = calibration.flops_per_s(acc, precision) if calibration is not None else None
    if eff is not None or acc.peak(roofline.compute_dtype(precision)) is not None:
        step = roofline.train_step_time(shape, setup, acc, mfu=mfu, cluster=cluster, achieved_flops_per_s=eff)
        cost = roofline.train_cost(step, setup, tokens, cluster.price_per_gpu_hour)
    return TrainPlan(
        model=shape,
        accelerator=acc,
        setup=setup,
        memory=capacity.train_memory(shape, setup),
        capacity_bytes=cap,
        fits=fits,
        min_gpus=capacity.min_gpus(shape, replace(setup, zero_stage=2), cap, max_gpus),
        max_micro_batch=capacity.max_micro_batch(shape, setup, cap),
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


@dataclass(frozen=True)
class JobPlan:
    """One suite job sized on a cluster: `fits` False means `run` refuses it (exit 2) unless --force."""

    name: str
    kind: str
    n_gpus: int
    peak_bytes: float
    capacity_bytes: float
    fits: bool
    wall_s: float | None
    note: str = ""


def _train_job_plan(job, cluster: Cluster, calibration: Calibration | None = None) -> JobPlan:
    cfg = job.config
    model_cfg = cfg.model  # resolved once by the suite: what the worker will run
    group = cluster.gpu_group
    gpu = group is not None
    n = max(1, job.resources.num_workers) if gpu else 1
    if gpu and n > group.gpus:
        return JobPlan(
            job.name, job.kind, n, 0.0, 0.0, False, None, f"needs {n} GPUs; the pool has {group.gpus}"
        )
    fp32 = cfg.dtype == "float32" or (cfg.dtype == "auto" and not gpu)
    tokens = cfg.total_steps(n) * cfg.tokens_per_step_per_rank() * n

    def sized(micro_batch: int, grad_accum: int) -> TrainPlan:
        return plan_training(
            model_shape(model_cfg, job.name),
            cluster,
            tokens=tokens,
            micro_batch=micro_batch,
            seq_len=cfg.data_config().seq_len,
            n_gpus=n,
            zero_stage=0,
            activation_checkpointing=False,
            ep_size=model_cfg.moe.ep_size if model_cfg.moe else 1,
            precision="fp32" if fp32 else "amp-bf16",
            grad_accum=grad_accum,
            calibration=calibration,
        )

    plan = sized(cfg.batch_size, cfg.grad_accum)
    note = f"as set: micro-batch {cfg.batch_size} x {cfg.grad_accum} accumulation, DDP, no checkpointing"
    if not plan.fits:
        gib = capacity.GIB
        peak = f"peak {plan.memory.peak / gib:,.2f} GiB of {plan.capacity_bytes / gib:,.2f} GiB"
        note = f"{peak}; {_proposal(cfg.batch_size, cfg.grad_accum, sized)}"
    wall = plan.cost.wall_s if plan.cost else None
    return JobPlan(job.name, job.kind, n, plan.memory.peak, plan.capacity_bytes, plan.fits, wall, note)


def _proposal(batch: int, accum: int, sized) -> str:
    """What would fit, by the one memory knob the train job has (its micro-batch; the job runs plain DDP
    without activation checkpointing): halve it, doubling grad_accum so tokens per step stay the same."""
    while batch % 2 == 0:
        batch, accum = batch // 2, accum * 2
        if sized(batch, accum).fits:
            return f"fits with train.batch_size={batch}, train.grad_accum={accum} (same tokens per step)"
    return f"does not fit even at micro-batch {batch}: use more GPUs, a smaller preset, or a larger GPU"


def _infer_job_plan(job, cluster: Cluster) -> JobPlan:
    cfg = job.config
    model_cfg = cfg.model  # resolved once by the suite (dtype and MoE capacity included)
    placement = "offload" if cfg.l3_placement == "offload" else "device"  # "both" also runs on device
    setup = InferSetup(
        batch=max(cfg.batch_sizes),
        context_len=cfg.prompt_len + cfg.gen_len,
        prompt_len=cfg.prompt_len,
        dtype_bytes=4 if model_cfg.dtype == "float32" else 2,
        l3_placement=placement,
    )
    mem, _, fits = plan_inference(model_shape(model_cfg, job.name), cluster, setup)
    acc = cluster.accelerator
    cap = capacity.usable_bytes(acc, memory_bytes=None if acc.is_gpu else cluster.nodes[0].memory_bytes)
    note = f"batch {setup.batch}"
    if mem.fgram_table_host:
        note += f"; SCONE table F {mem.fgram_table_host / capacity.GIB:,.2f} GiB in host memory"
    return JobPlan(job.name, job.kind, 1, mem.device_total, cap, fits, None, note)


def plan_suite(
    suite: str, cluster: Cluster, sets: list[str] | None = None, calibration: Calibration | None = None
) -> list[JobPlan]:
    """Size every job of a suite on `cluster` before anything is submitted (train and infer jobs; other
    kinds need no model and always fit). Raises the suite's SuiteError for an invalid suite."""
    return plan_jobs(load_suite(suite, sets).jobs, cluster, calibration)


def plan_jobs(jobs, cluster: Cluster, calibration: Calibration | None = None) -> list[JobPlan]:
    """Size expanded suite jobs (`JobSpec`s) on `cluster`; see `plan_suite`."""
    plans = []
    for job in jobs:
        if job.kind == "train":
            plans.append(_train_job_plan(job, cluster, calibration))
        elif job.kind == "infer":
            plans.append(_infer_job_plan(job, cluster))
        else:
            plans.append(JobPlan(job.name, job.kind, 0, 0.0, 0.0, True, None, "no model"))
    return plans


def unfit_jobs(plans: list[JobPlan]) -> list[JobPlan]:
    """The jobs `run --cluster` must refuse (exit 2) unless --force."""
    return [p for p in plans if not p.fits]


@dataclass(frozen=True)
class PlanRequest:
    """What `isosparse plan` asks: a SUITE (every job sized), or one preset as `family` trained on `tokens`
    with the optional TrainSetup choices (None: `plan_training` picks)."""

    suite: str | None = None
    sets: tuple[str, ...] = ()
    preset: str | None = None
    family: str = "dense"
    tokens: float = 1e9
    micro_batch: int | None = None
    seq_len: int | None = None
    n_gpus: int | None = None
    zero_stage: int | None = None
    activation_checkpointing: bool | None = None
    precision: Precision | None = None
    mfu: float | None = None


@dataclass(frozen=True)
class PlanOutcome:
    """The answer: the cluster, the calibration used (or None), and the suite's job plans or the one plan."""

    cluster: Cluster
    calibration: Calibration | None
    jobs: list[JobPlan] | None = None
    training: TrainPlan | None = None


def plan(request: PlanRequest, cluster: Cluster, calibration: Calibration | None = None) -> PlanOutcome:
    """Size `request` on `cluster`; ValueError for an incomplete request (SuiteError for a bad suite)."""
    if request.suite is not None:
        jobs = plan_suite(request.suite, cluster, list(request.sets), calibration=calibration)
        return PlanOutcome(cluster, calibration, jobs=jobs)
    if request.preset is None:
        raise ValueError("give SUITE or --preset (with --family)")
    shape = model_shape(
        workloads.preset_model(request.preset, request.family), f"{request.preset}/{request.family}"
    )
    r = request
    options = {
        "micro_batch": r.micro_batch,
        "seq_len": r.seq_len,
        "n_gpus": r.n_gpus,
        "zero_stage": r.zero_stage,
        "activation_checkpointing": r.activation_checkpointing,
    }
    extra = {k: v for k, v in (("precision", request.precision), ("mfu", request.mfu)) if v is not None}
    training = plan_training(
        shape, cluster, tokens=request.tokens, calibration=calibration, **options, **extra
    )
    return PlanOutcome(cluster, calibration, training=training)
