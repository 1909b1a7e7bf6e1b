"""The training benchmark job: `run(TrainJobConfig(preset=..., family=...), ctx) -> BenchResult`.
Details: docs/workloads.md#workloadsjobstrain."""

import json
import math
import os
import resource
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import numpy as np
import torch

from workloads.data import DataConfig, prepare
from workloads.fields import Ge, Le, Lt, NonNegFloat, NonNegInt, PosInt, check_fields
from workloads.jobs import distributed, floors, loop, metrics, optim
from workloads.jobs.contention import TimedPhase
from workloads.jobs.optim import param_bytes
from workloads.jobs.result import BenchResult, JobContext, to_jsonable
from workloads.jobs.setup import (
    allocation_summary,
    base_model_config,
    check_data_fits,
    corpus_params,
    prepare_job,
)
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.models.accounting import (
    fgram_table_bytes,
    fgram_train_flops_per_token,
    train_flops_per_token,
    train_step_cost,
)
from workloads.models.config import Family, ModelConfig

Device = Literal["cpu", "cuda"]
AmpDType = Literal["auto", "float32", "bfloat16"]
Beta = Annotated[float, Ge(0), Lt(1)]


@dataclass(frozen=True)
class TrainJobConfig:
    """One training benchmark. Only `preset` and `family` are required.

    Model: preset / family / overrides / allocation_path (see `spec.ModelSpec`). Data: `data`, windows of
    `seq_len` tokens (None: data.seq_len). batch_size: micro-batch per rank; grad_accum micro-batches per
    optimizer step. steps, or token_budget (when set: ceil(token_budget / tokens per step) steps).
    AdamW(lr, betas, weight_decay; norms undecayed; l3_* / embedding_* override the lr / weight decay of
    the L3 tables / embeddings), linear warmup over lr_warmup_steps then cosine to min_lr_ratio · lr.
    l3_optimizer: the L3 tables' optimizer: "adamw" (dense, with the rest; the paper's setup, default),
    "sparse_adam" (lazy Adam: touched rows only) or "rowwise_adagrad" (one accumulator per row), with
    l3_lr / l3_weight_decay; see workloads/jobs/row_sparse.py. Ignored by models without L3 tables.
    dtype: "auto" = bfloat16 autocast on cuda, float32 on cpu (parameters stay float32).
    timing_warmup_steps: untimed first steps of this process. eval_every: also evaluate every N steps
    (always at the end), over eval_batches validation batches. checkpoint_every: save every N steps to
    ctx.checkpoint_dir. save_weights: when training finishes, write the model's weights alone to
    <ctx.checkpoint_dir>/final-model.pt (the suite sets it for a train job that an eval job evaluates).
    log_every: stream train/loss every N steps (one host sync per flush).
    eval_data: extra evaluation corpora by name, tokenized with the job's tokenizer; their validation
    splits are scored as eval/<name>/val_loss and eval/<name>/val_ppl.
    model: the resolved model (`resolve`); None resolves it from preset / family / overrides when the job
    starts. The orchestrator ships it set, so the worker runs exactly the fingerprinted model.
    """

    preset: str
    family: Family
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    allocation_path: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    seq_len: PosInt | None = None
    batch_size: PosInt = 8
    grad_accum: PosInt = 1
    steps: PosInt = 100
    token_budget: PosInt | None = None
    lr: NonNegFloat = 3e-4
    min_lr_ratio: Annotated[NonNegFloat, Le(1)] = 0.1
    lr_warmup_steps: NonNegInt = 10
    weight_decay: NonNegFloat = 0.1
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    grad_clip: NonNegFloat = 1.0
    l3_lr: NonNegFloat | None = None
    l3_weight_decay: NonNegFloat | None = None
    l3_optimizer: optim.L3Optimizer = "adamw"
    embedding_lr: NonNegFloat | None = None
    embedding_weight_decay: NonNegFloat | None = None
    seed: NonNegInt = 0
    device: Device = "cpu"
    dtype: AmpDType = "auto"
    timing_warmup_steps: NonNegInt = 2
    eval_every: PosInt | None = None
    eval_batches: PosInt = 8
    checkpoint_every: PosInt | None = None
    save_weights: bool = False
    log_every: PosInt = 10
    eval_data: dict[str, DataConfig] = field(default_factory=dict)
    model: ModelConfig | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        self.model_spec()  # unknown preset, misplaced overrides
        if any(not name or "/" in name for name in self.eval_data):
            raise ValueError(
                f"TrainJobConfig.eval_data names must be non-empty, without '/', got {list(self.eval_data)}"
            )

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.preset, self.family, self.overrides, self.allocation_path)

    def data_config(self) -> DataConfig:
        return self.data if self.seq_len is None else replace(self.data, seq_len=self.seq_len)

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain float32."""
        if self.dtype == "bfloat16" or (self.dtype == "auto" and self.device == "cuda"):
            return torch.bfloat16
        return None

    def total_steps(self, world_size: int = 1) -> int:
        if self.token_budget is None:
            return self.steps
        return math.ceil(self.token_budget / (self.tokens_per_step_per_rank() * world_size))

    def tokens_per_step_per_rank(self) -> int:
        return self.batch_size * self.grad_accum * self.data_config().seq_len


def resolve(
    cfg: TrainJobConfig, cuda: bool | None = None, model: ModelConfig | None = None
) -> TrainJobConfig:
    """The config as a worker runs it, checked against the model's base (window length, BPE vocabulary;
    FieldError names the field). `model`: the resolved model, matched on this job's corpus — the
    orchestrator passes its group's, fingerprints the result and ships it, so the worker never re-resolves.
    Without it (`cfg.model` None) the job resolves the model on its data when it starts. `cuda` is unused:
    a training job's device is explicit."""
    base = cfg.model or model or base_model_config(cfg.model_spec())
    check_data_fits(cfg.data_config(), base, "seq_len" if cfg.seq_len is not None else "data.seq_len")
    return cfg if cfg.model is not None or model is None else replace(cfg, model=model)


def _check_world(cfg: TrainJobConfig, w: distributed.World) -> None:
    """What only the worker can check: the distributed group and the device."""
    ep_size = cfg.model.moe.ep_size if cfg.model and cfg.model.moe else (cfg.overrides.moe_ep_size or 1)
    if cfg.family == "moe" and w.size % ep_size:
        raise ValueError(
            f"moe.ep_size={ep_size} needs a distributed group whose size is a multiple of it; "
            f"this job has {w.size} rank(s)"
        )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainJobConfig.device='cuda' but torch sees no CUDA device")


def build_loop(cfg: TrainJobConfig, ctx: JobContext) -> "loop.TrainLoop":
    """Resolve, prepare data and L3 counts (rank 0 first, then the others from its caches) and build the
    parallelized model, optimizer and schedule. `run` uses it; so does the benchmark."""
    w = distributed.world()
    cfg = resolve(cfg)  # checks only: a shipped config is run as it is
    _check_world(cfg, w)
    device = distributed.job_device(cfg.device, w)
    if cfg.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed's first import picks one
    spec, data_cfg = cfg.model_spec(), cfg.data_config()
    data = counts = scone = None
    for turn in (0, 1):  # turn 0: rank 0 builds the caches; turn 1: every other rank reads them
        if (w.rank == 0) == (turn == 0):
            job = prepare_job(spec, cfg.model, data_cfg, ctx.cache_dir)
            data, model_cfg, counts, scone = job.data, job.model, job.counts, job.scone
            extra = {  # tokenized with the job's tokenizer
                name: prepare(
                    replace(d, tokenizer_path=str(data.tokenizer_path), seq_len=data_cfg.seq_len),
                    ctx.cache_dir,
                )
                for name, d in cfg.eval_data.items()
            }
        distributed.barrier()
    return loop.TrainLoop(cfg, model_cfg, data, counts, w, device, ctx, extra, scone=scone)


def run(cfg: TrainJobConfig, ctx: JobContext | None = None) -> BenchResult:
    """Train as configured (as one rank of the default process group when there is one), resuming from the
    latest checkpoint in ctx.checkpoint_dir. Only rank 0 streams; every rank returns the same all-reduced
    loss / eval / load-balance numbers (timings and memory are its own).

    Streams (ctx.log): train/loss and train/lr per step; eval/val_loss, eval/val_ppl, eval/val_bpb at each
    evaluation.
    BenchResult.metrics: train/loss (last step, rank mean), train/tokens_per_s (all ranks' tokens per step
    / median step time), train/step_time_s (median) with train/step_time_s_p10 and _p90 (warm-up steps
    excluded), train/mfu (only with ctx.peak_flops; see metrics.py), mem/peak_device_bytes (CUDA
    max_memory_allocated since the first step; omitted on CPU), mem/peak_host_bytes (ru_maxrss of the
    process since its start), mem/params_bytes/{dense,l3_tables,experts,embeddings}, mem/optimizer_bytes
    and its split mem/optimizer_bytes/<category> (this rank), eval/val_loss, eval/val_ppl and eval/val_bpb
    (at the end) with data/val_bytes_per_token (the split's UTF-8 bytes over its tokens: equal across rows
    iff their losses per token are in one unit), data/replaced_chars (U+FFFD the text source wrote for
    undecodable input),
    params_active (+ _max / _min), params_total, sparsity (count_params weighted by the train token
    frequencies), by family lb/expert_tokens_max_over_mean, lb/expert_tokens_cv, lb/dropped_token_frac
    (tokens that lost all top_k routes), lb/dropped_route_frac, lb/aux_loss (MoE) or
    lb/l3_rows_per_token_mean/_max, lb/l3_unique_rows_per_step, lb/l3_bytes_per_token (L3), each balance
    figure also per optimizer step as <key>_step_median / _step_p90 / _step_max (metrics.py).
    A job stopped through ctx.should_stop saves a checkpoint and returns without evaluating.
    """
    ctx = ctx or JobContext()
    floors.set_threads(ctx.threads)
    job = build_loop(cfg, ctx)
    gemm = (cfg.batch_size * job.seq_len, job.model_cfg.dim, job.model_cfg.ffn_dim)  # the MLP's matmul
    machine = floors.job_probe(job.device, gemm)
    start_step = job.resume()
    with TimedPhase(job.device) as phase:  # the timed steps (and the evaluations between them)
        outcome = job.train(start_step)
    outcome.metrics |= phase.metrics() | floors.probe_metrics(machine)
    if not outcome.stopped:
        job.evaluate_into(outcome)
        job.save_weights()
    result = _result(cfg, ctx, job, outcome, start_step)
    if outcome.timing is not None:  # this rank's step against the floor of its own share of the work
        pc = corpus_params(job.model_cfg, job.data, job.counts)
        element = job.model.tok_emb.weight.element_size()
        cost = train_step_cost(job.model_cfg, pc, cfg.batch_size * cfg.grad_accum, job.seq_len, element)
        result.metrics["train/floor_frac"] = floors.floor_frac(machine, cost, outcome.timing.median_s, gemm)
    return result


def _result(cfg, ctx, job: "loop.TrainLoop", outcome: "loop.Outcome", start_step: int) -> BenchResult:
    model_cfg, w, data, counts = job.model_cfg, job.world, job.data, job.counts
    pc = corpus_params(model_cfg, data, counts)
    out: dict[str, float] = dict(outcome.metrics)
    out["data/val_bytes_per_token"] = data.val_bytes_per_token
    per_token = train_flops_per_token(model_cfg, pc.flops_active, job.seq_len)
    if job.scone is not None:  # SCONE also trains A_fgram (L3_SPEC §6): more training compute
        out["train/flops_per_token_main"] = per_token
        per_token += fgram_train_flops_per_token(model_cfg, out.get("train/fgram_tokens_per_token", 0.0))
        element = job.model.tok_emb.weight.element_size()  # F in the parameter dtype
        out["mem/fgram_table_bytes"] = float(fgram_table_bytes(model_cfg, element))
        out["train/flops_per_token"] = per_token
    if outcome.timing is not None:
        throughput = metrics.throughput_metrics(outcome.timing, cfg.tokens_per_step_per_rank() * w.size)
        out |= throughput
        if ctx.peak_flops:
            out["train/mfu"] = metrics.mfu(
                throughput["train/tokens_per_s"], per_token, ctx.peak_flops, w.size
            )
    if job.device.type == "cuda":
        out["mem/peak_device_bytes"] = float(torch.cuda.max_memory_allocated(job.device))
    out["mem/peak_host_bytes"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB
    if data.replaced_chars is not None:  # undecodable characters of the corpus that became U+FFFD
        out["data/replaced_chars"] = float(data.replaced_chars)
    out |= metrics.param_bytes_metrics(param_bytes(job.model))
    opt_bytes = job.optimizer_bytes()
    out["mem/optimizer_bytes"] = float(sum(opt_bytes.values()))
    out |= {f"mem/optimizer_bytes/{k}": float(v) for k, v in opt_bytes.items()}
    params = metrics.accounting_metrics(pc)
    out |= params
    params |= {f"params/{k}": float(v) for k, v in pc.by_category.items()}
    params |= {f"params_active/{k}": float(v) for k, v in pc.active_by_category.items()}
    info = {
        "family": model_cfg.family,
        "preset": cfg.preset,
        "device": str(job.device),
        "autocast": str(cfg.autocast_dtype() or "none"),
        "world_size": str(w.size),
        "parallel": job.parallel_kind,
        "hardware": ctx.hardware or "",
        "data_fingerprint": data.fingerprint,
        "datasets": json.dumps(data.dataset_inputs()),
        "resumed_from_step": str(start_step),
        "steps_done": str(outcome.steps_done),
        "stopped_early": str(outcome.stopped).lower(),
    }
    config = {"job": to_jsonable(cfg), "model": to_jsonable(model_cfg), "data": to_jsonable(data.config)}
    arrays = {}
    if job.expert_routes is not None:
        arrays["expert_tokens"] = job.expert_routes.tolist()
    if job.scone is not None:
        fg = job.scone.fgrams
        info["fgram_summary"] = json.dumps(
            {
                "n_fgrams": fg.n_fgrams,
                "n_candidates": fg.n_candidates,
                "max_n": fg.max_n,
                "min_count": fg.min_count,
                "n_tokens": fg.n_tokens,
                "file": str(job.scone.path),
                "length_counts": np.bincount(fg.lengths, minlength=fg.max_n + 1)[2:].tolist(),
            }
        )
    if counts:
        summary = allocation_summary(cfg.model_spec(), model_cfg, counts, data)
        info["allocation_summary"] = json.dumps(summary)  # → allocation_summary.json in MLflow
        arrays["l3_rows_per_token"] = np.asarray(counts[min(counts)]).tolist()
    return BenchResult(kind="train", config=config, metrics=out, params=params, info=info, arrays=arrays)
