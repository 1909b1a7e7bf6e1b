"""The inference job: `run(InferJobConfig, ctx) -> BenchResult`; prefill, time to first token and KV-cache
decode throughput over a sweep of batch sizes, with L3 tables on the device and/or offloaded (L3_SPEC §4).
Details: docs/workloads.md#workloadsjobsinfer."""

import os
import resource
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import torch

from workloads.data import DataConfig, resolve_cache_dir
from workloads.fields import Ge, MinLen, NonNegInt, PosInt, check_fields
from workloads.jobs import checkpoint, floors, rounds
from workloads.jobs.contention import TimedPhase
from workloads.jobs.decode import moe_generation_balance
from workloads.jobs.metrics import accounting_metrics, param_bytes_metrics
from workloads.jobs.result import BenchResult, JobContext, to_jsonable
from workloads.jobs.rounds import placements
from workloads.jobs.setup import (
    FieldError,
    base_model_config,
    build_model,
    check_data_fits,
    corpus_params,
    device_and_dtype,
    prepare_job,
)
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.models.config import Family, ModelConfig
from workloads.models.transformer import TORCH_DTYPES, Transformer
from workloads.scone.serve import FgramTable

Placement = Literal["device", "offload", "both"]
MoEServing = Literal["dropless", "deepspeed"]
JobDType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class InferJobConfig:
    """One inference benchmark. Everything but `preset` and `family` has a default.

    batch_sizes: the sweep; each needs that many prompts of `prompt_len` tokens from the validation split.
    gen_len: tokens generated per sequence (the first by the prefill, gen_len - 1 by decode steps).
    l3_placement: where L3 tables live: "device", "offload" (pinned host memory), or "both" (each timed
        in the same run, with the ratio); for dense/MoE models only "device" applies ("both" means it).
    fgram_offload: where a SCONE model's offloaded F lives: "host" memory or "disk" (a memory-mapped file
        under the cache dir, for tables larger than RAM).
    device: "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:<i>".
    dtype: parameter/activation dtype; "auto" is bfloat16 on CUDA and float32 on CPU.
    warmup / repeats: untimed and timed generations per (batch size, placement).
    checkpoint: weights to load: a training checkpoint folder (its latest step-*/rank-0.pt), or a .pt file
        holding a state dict (or a dict with a "model" state dict).
    model: the resolved model (`resolve`: dtype and MoE min_capacity applied); None resolves it at start.
    moe_impl: how MoE blocks serve: "dropless" (every token reaches its top_k experts, one matmul per
        expert over its tokens: `workloads.models.moe_dropless`) or "deepspeed" (the training layer with
        its eval capacity factor, for comparison).
    """

    preset: str
    family: Family
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    allocation_path: str | None = None
    batch_sizes: Annotated[tuple[PosInt, ...], MinLen(1)] = (1, 8, 64)
    prompt_len: PosInt = 128
    gen_len: Annotated[int, Ge(2)] = 32  # one decode step at least
    l3_placement: Placement = "both"
    fgram_offload: Literal["host", "disk"] = "host"
    device: str = "auto"
    dtype: JobDType = "auto"
    seed: NonNegInt = 0
    warmup: NonNegInt = 1
    repeats: PosInt = 3
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: str | None = None
    model: ModelConfig | None = None
    moe_impl: MoEServing = "dropless"

    def __post_init__(self) -> None:
        check_fields(self)
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"InferJobConfig.batch_sizes has repeats: {self.batch_sizes!r}")
        _parse_device(self.device)
        self.model_spec()  # unknown preset, misplaced overrides

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.preset, self.family, self.overrides, self.allocation_path)


def _parse_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"InferJobConfig.device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}"
        ) from err
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"InferJobConfig.device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return parsed


def resolve(
    cfg: InferJobConfig, cuda: bool | None = None, model: ModelConfig | None = None
) -> InferJobConfig:
    """The config as a worker runs it: device "auto" → "cuda" when `cuda` (None: torch sees a GPU) else
    "cpu", dtype "auto" → bfloat16 on CUDA, float32 on CPU, and, given the resolved `model` (matched on this
    job's corpus: the orchestrator passes its group's), that model specialized for the run (`_specialize`).
    The orchestrator fingerprints and ships the result; a shipped config is returned as it is. Without a
    model the job resolves it on its data when it starts. FieldError names a field that cannot run."""
    if cfg.model is not None:
        return cfg
    device, dtype = device_and_dtype(cfg.device, cfg.dtype, cuda)
    base = model or base_model_config(cfg.model_spec())
    ep_size = model.moe.ep_size if model is not None and model.moe else (cfg.overrides.moe_ep_size or 1)
    if cfg.family == "moe" and ep_size > 1:
        raise FieldError(
            "overrides.moe_ep_size",
            f"{ep_size}: inference runs on one device "
            "(expert parallelism needs the multi-worker training setup)",
        )
    if cfg.l3_placement == "offload" and cfg.family not in ("l3", "scone"):
        raise FieldError(
            "l3_placement",
            "'offload' needs an L3 model (or a SCONE model: it places its "
            f"f-gram table), got family={cfg.family!r}",
        )
    if cfg.prompt_len + cfg.gen_len > base.max_seq_len:
        raise FieldError(
            "prompt_len",
            f"prompt_len + gen_len = {cfg.prompt_len} + {cfg.gen_len} exceeds the "
            f"model's max_seq_len={base.max_seq_len} (preset {cfg.preset!r})",
        )
    check_data_fits(replace(cfg.data, seq_len=cfg.prompt_len), base, "prompt_len")
    out = replace(cfg, device=device, dtype=dtype)
    return out if model is None else replace(out, model=_specialize(out, model))


def _specialize(cfg: InferJobConfig, model: ModelConfig) -> ModelConfig:
    """The model in the job's (resolved) dtype; for top-1 MoE, min_capacity capped at the smallest batch
    size: DeepSpeed's top-1 gate needs at least min_capacity tokens per call, and a decode step has B."""
    model = replace(model, dtype=cfg.dtype)
    if model.moe is not None and model.moe.top_k == 1:
        min_capacity = min(model.moe.min_capacity, min(cfg.batch_sizes))
        model = replace(model, moe=replace(model.moe, min_capacity=min_capacity))
    return model


def placement_label(placement: str, device: torch.device, family: str = "l3") -> str:
    """The placement as reported: "offload" on CUDA; on CPU (no device to offload from) "host" for L3
    tables, read in place, and "host-compact" for SCONE's F, whose rows are still gathered."""
    if placement != "offload" or device.type == "cuda":
        return placement
    return "host-compact" if family == "scone" else "host"


def _prompts(data, cfg: InferJobConfig) -> torch.Tensor:
    """(max batch size, prompt_len) consecutive validation windows, the same for every run."""
    need = max(cfg.batch_sizes)
    n_tokens = data.val.n_tokens
    if n_tokens - 1 < need * cfg.prompt_len:
        raise ValueError(
            f"InferJobConfig.batch_sizes: batch size {need} needs {need} prompts of "
            f"prompt_len={cfg.prompt_len} tokens, but the validation split has {n_tokens} tokens"
        )
    windows = data.packed("val", seq_len=cfg.prompt_len, shuffle=False)
    prompts, _ = next(windows.batches(need))
    return prompts  # (need, prompt_len) int64


def _sweep(
    models: dict[str, Transformer],
    prompts: torch.Tensor,
    cfg: InferJobConfig,
    ctxs: dict[str, JobContext],
    scones: dict | None = None,
) -> dict[str, dict]:
    """Every batch size × model × placement; streams each batch size's metrics to the model's ctx;
    returns them all per family, keyed per B."""
    metrics: dict[str, dict] = {f: {} for f in models}
    largest = max(cfg.batch_sizes)
    for i, bs in enumerate(cfg.batch_sizes):
        if any(ctx.stop_requested() for ctx in ctxs.values()):
            break
        measured = rounds.measure(models, prompts[:bs], cfg, scones)
        for family, step in measured.metrics.items():
            model = models[family]
            if len(placements(cfg, model.config)) == 2:
                step["infer/offload_decode_ratio"] = (
                    step["infer/offload/decode_tokens_per_s"] / step["infer/decode_tokens_per_s"]
                )
            if model.config.moe is not None:
                step |= moe_generation_balance(model, prompts[:bs], cfg.gen_len)
            per_batch = {f"{k}/bs{bs}": v for k, v in step.items() if k != "mem/offload/host_table_bytes"}
            ctxs[family].log(per_batch, i)
            metrics[family] |= per_batch
            if bs == largest:
                metrics[family] |= step
    return metrics


def _accounting(model_cfg: ModelConfig, data, counts: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, params): params_active/params_total/sparsity (L3 rows weighted by train token counts)."""
    pc = corpus_params(model_cfg, data, counts)
    element = torch.empty((), dtype=TORCH_DTYPES[model_cfg.dtype]).element_size()
    headline = accounting_metrics(pc)
    metrics = headline | param_bytes_metrics({k: n * element for k, n in pc.by_category.items()})
    params = headline | {f"params/{k}": float(n) for k, n in pc.by_category.items()}
    return metrics, params


@dataclass(frozen=True)
class Built:
    """A job's resolved model config, data, prompts, L3 counts and built model."""

    model_cfg: ModelConfig
    data: object
    prompts: torch.Tensor  # (max batch, prompt_len) on the device
    counts: dict
    model: Transformer
    scone: "FgramTable | None"  # a SCONE model's precomputed f-gram table F


def build(cfg: InferJobConfig, ctx: JobContext) -> Built:
    """Resolve and build the model (weights from `cfg.checkpoint` if given) and its prompts, whose ids are
    validated here, where they enter: the model's layers do not re-check them on every call. A config the
    orchestrator shipped is run as resolved; otherwise it is resolved here, on this job's data."""
    cfg = resolve(cfg)  # a no-op for what the orchestrator ships
    device = _parse_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"InferJobConfig.device={cfg.device!r} but CUDA is not available")
    data_cfg = replace(cfg.data, seq_len=cfg.prompt_len)
    job = prepare_job(cfg.model_spec(), cfg.model, data_cfg, ctx.cache_dir, lambda m: _specialize(cfg, m))
    data, model_cfg, counts, scone_data = job.data, job.model, job.counts, job.scone
    prompts = _prompts(data, cfg)
    if int(prompts.min()) < 0 or int(prompts.max()) >= model_cfg.vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {model_cfg.vocab_size}) (model vocab_size)")
    fgrams = scone_data.fgrams if scone_data is not None else None
    model = build_model(model_cfg, counts, device, seed=cfg.seed, fgrams=fgrams).eval()  # eval: MoE capacity
    if cfg.checkpoint is not None:
        try:
            checkpoint.load_weights(model, cfg.checkpoint)
        except ValueError as err:
            raise ValueError(f"InferJobConfig.checkpoint: {err}") from err
    model.serve(cfg.moe_impl)  # weights loaded: the fused CPU kernels' tables are built once
    scone = None
    if scone_data is not None:  # F once, in eval mode (L3_SPEC §6); A_fgram is not run while decoding
        path = None  # fgram_offload "disk": F in a memory-mapped file next to the job's other caches
        if cfg.fgram_offload == "disk":
            path = resolve_cache_dir(ctx.cache_dir) / "scone" / f"F-{os.getpid()}-{id(model):x}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
        scone = FgramTable(scone_data.matcher, model.precompute_fgram_table(), path, cfg.fgram_offload)
    return Built(model_cfg, data, prompts.to(device), counts, model, scone)


def _result(cfg: InferJobConfig, ctx: JobContext, built: Built, metrics: dict) -> BenchResult:
    model_cfg, data = built.model_cfg, built.data
    if built.scone is not None:
        metrics["mem/fgram_table_bytes"] = float(built.scone.table.nbytes)
        metrics["mem/params_bytes/fgram_table"] = float(built.scone.table.nbytes)  # storage, not parameters
    metrics["mem/peak_host_bytes"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    acct_metrics, params = _accounting(model_cfg, data, built.counts)
    metrics |= acct_metrics
    info = {
        "family": model_cfg.family,
        "preset": cfg.preset,
        "device": str(built.prompts.device),
        "dtype": model_cfg.dtype,
        "placements": ",".join(
            placement_label(p, built.prompts.device, model_cfg.family) for p in placements(cfg, model_cfg)
        ),
        "hardware": ctx.hardware or "",
        "data_fingerprint": data.fingerprint,
    }
    if model_cfg.moe is not None:
        info["moe_min_capacity"] = str(model_cfg.moe.min_capacity)
        info["moe_impl"] = cfg.moe_impl
    config = {"job": to_jsonable(cfg), "model": to_jsonable(model_cfg), "data": to_jsonable(data.config)}
    return BenchResult(kind="infer", config=config, metrics=metrics, params=params, info=info)


def run(cfg: InferJobConfig, ctx: JobContext | None = None) -> BenchResult:
    """Build the model, then time the sweep; see the module doc."""
    return run_interleaved([cfg], [ctx or JobContext()])[0]


def run_interleaved(cfgs: list[InferJobConfig], ctxs: list[JobContext] | None = None) -> list[BenchResult]:
    """Several jobs (e.g. the families of one preset) timed together: every generation of every job
    alternates, so their ratios hold on a machine whose load drifts. The jobs must share the sweep
    (batch sizes, prompt and generation lengths, repeats, device) and their models' families differ."""
    ctxs = ctxs or [JobContext() for _ in cfgs]
    sweep = {(c.batch_sizes, c.prompt_len, c.gen_len, c.warmup, c.repeats, c.device, c.data) for c in cfgs}
    if len(sweep) != 1 or len({c.family for c in cfgs}) != len(cfgs):
        raise ValueError("run_interleaved needs jobs with one sweep and distinct families")
    floors.set_threads(ctxs[0].threads)
    built = [build(cfg, ctx) for cfg, ctx in zip(cfgs, ctxs, strict=True)]
    machine = floors.job_probe(built[0].prompts.device, (1, built[0].model_cfg.dim, built[0].model_cfg.dim))
    models = {cfg.family: b.model for cfg, b in zip(cfgs, built, strict=True)}
    by_family = {c.family: x for c, x in zip(cfgs, ctxs, strict=True)}
    scones = {c.family: b.scone for c, b in zip(cfgs, built, strict=True)}
    with TimedPhase(built[0].prompts.device) as phase:
        metrics = _sweep(models, built[0].prompts, cfgs[0], by_family, scones)
    for family in metrics:
        metrics[family] |= phase.metrics()
    for c, b in zip(cfgs, built, strict=True):
        mc = b.model_cfg
        pc = corpus_params(mc, b.data, b.counts)
        element = torch.empty((), dtype=TORCH_DTYPES[mc.dtype]).element_size()
        metrics[c.family] |= floors.infer_floor_fracs(mc, pc, element, c, metrics[c.family], machine)
        metrics[c.family] |= floors.probe_metrics(machine)
    results = [_result(c, x, b, metrics[c.family]) for c, x, b in zip(cfgs, ctxs, built, strict=True)]
    if len(cfgs) == 1:
        return results
    # One process held every model: its peak RSS is no job's own, so none records it.
    return [
        replace(r, metrics={k: v for k, v in r.metrics.items() if k != "mem/peak_host_bytes"})
        for r in results
    ]
