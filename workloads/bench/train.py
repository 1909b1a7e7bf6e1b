"""Section `train`: optimizer steps of the matched `tiny` families, built exactly as the train job builds
them (`workloads.jobs.train.build_loop`) and stepped in turn (dense, l3, moe, dense, ...), so a load
change on a shared machine hits each alike; MoE trains through DeepSpeed.
Details: docs/workloads.md#workloadsbenchtrain."""

from collections.abc import Callable
from dataclasses import replace

import torch

from workloads.bench.rows import BASELINE, COMPARISON, BenchContext, Row, ratio_goal, timed_row
from workloads.data import DataConfig
from workloads.jobs.result import JobContext
from workloads.jobs.setup import corpus_params
from workloads.jobs.train import TrainJobConfig, build_loop
from workloads.models.accounting import train_step_cost
from workloads.models.transformer import TORCH_DTYPES

VARIANTS = ("dense", "l3", "moe")
L3_GOAL = 0.95


def stepped_rows(
    ctx: BenchContext, section: str, variants: dict[str, dict], warmup: int, steps: int, floor: Callable
) -> dict[str, Row]:
    """Per name, a timed row of the `tiny` TrainLoop built from TrainJobConfig(family=..., **variants[name])
    (as the train job builds it), the loops stepped in turn `steps` times; floor(name, job, batch, seq_len)
    gives a step's (bytes, FLOPs). The first `warmup` steps are not timed."""
    batch, seq_len = (4, 64) if ctx.quick else (8, 256)
    data = DataConfig(max_documents=100 if ctx.quick else 400)
    common = dict(preset="tiny", data=data, seq_len=seq_len, batch_size=batch, steps=steps)
    common |= dict(timing_warmup_steps=warmup, device=ctx.device.type)
    loops = {name: build_loop(TrainJobConfig(**common, **kw), JobContext()) for name, kw in variants.items()}
    for step in range(steps):
        for name, job in loops.items():
            loss = job.step(step)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{section}/{name}: loss is {loss.item()} at step {step}")
    out = {}
    for name, job in loops.items():
        nbytes, flops = floor(name, job, batch, seq_len)
        samples, title = job.timer.samples_s()[warmup:], f"step {name} {batch}×{seq_len}"
        out[name] = timed_row(
            section, title, samples, ctx.probe, nbytes=nbytes, flops=flops, items=batch * seq_len
        )
    return out


def _floor(name: str, job, batch: int, seq_len: int) -> tuple[float, float]:
    cfg = job.model_cfg
    pc = corpus_params(cfg, job.data, job.counts)
    element = torch.empty((), dtype=TORCH_DTYPES[cfg.dtype]).element_size()
    return train_step_cost(cfg, pc, batch, seq_len, element)


def rows(ctx: BenchContext) -> list[Row]:
    # One warm-up step (the first allocates AdamW's state); then ~rounds·2/3 timed steps, at least 3: a MoE
    # step through DeepSpeed takes seconds on 2 cores, and `make bench` has 5 minutes for every section.
    warmup, steps = 1, 1 + max(3, (2 * ctx.rounds + 2) // 3)
    return with_goals(stepped_rows(ctx, "train", {f: {"family": f} for f in VARIANTS}, warmup, steps, _floor))


def with_goals(out: dict[str, Row]) -> list[Row]:
    """{family: step row} -> the rows with their goals: dense the baseline, L3 ≥ L3_GOAL × dense's speed,
    MoE ÷ dense for comparison."""
    dense = out["dense"]
    return [
        dense.without_goal(BASELINE),
        ratio_goal(out["l3"], dense, L3_GOAL, "dense"),
        replace(out["moe"], value=dense.median_s / out["moe"].median_s).without_goal(COMPARISON),
    ]
