"""Section `train`: optimizer steps of the matched `tiny` families, built exactly as the train job builds
them (`workloads.jobs.train.build_loop`) and stepped in turn (dense, l3, moe, dense, ...), so a load
change on a shared machine hits each alike; MoE trains through DeepSpeed.

Bytes and FLOPs per step from `accounting.train_step_cost` (weights read twice, gradients written,
AdamW's state read and written; FLOPs 3× the forward). Goal (issues 4 and 15): L3 ≥ 0.95× dense; dense is
the baseline and MoE is shown ÷ dense for comparison.
"""

from dataclasses import replace

import torch

from workloads.bench.rows import BASELINE, COMPARISON, BenchContext, Row, ratio_goal, timed_row
from workloads.data import DataConfig
from workloads.jobs.result import JobContext
from workloads.jobs.setup import token_freqs_for
from workloads.jobs.train import TrainJobConfig, build_loop
from workloads.models.accounting import count_params, train_step_cost
from workloads.models.transformer import TORCH_DTYPES

VARIANTS = ("dense", "l3", "moe")
L3_GOAL = 0.95


def rows(ctx: BenchContext) -> list[Row]:
    batch, seq_len = (4, 64) if ctx.quick else (8, 256)
    # One warm-up step (the first allocates AdamW's state); then ~rounds·2/3 timed steps, at least 3: a MoE
    # step through DeepSpeed takes seconds on 2 cores, and `make bench` has 5 minutes for every section.
    warmup, steps = 1, 1 + max(3, (2 * ctx.rounds + 2) // 3)
    data = DataConfig(max_documents=100 if ctx.quick else 400)
    loops = {
        f: build_loop(TrainJobConfig(preset="tiny", family=f, data=data, seq_len=seq_len, batch_size=batch,
                                     steps=steps, timing_warmup_steps=warmup, device=ctx.device.type),
                      JobContext())
        for f in VARIANTS
    }  # fmt: skip
    for step in range(steps):
        for f, job in loops.items():
            loss = job.step(step)
            if not torch.isfinite(loss):
                raise RuntimeError(f"train/{f}: loss is {loss.item()} at step {step}")
    out: dict[str, Row] = {}
    for f, job in loops.items():
        cfg = job.model_cfg
        pc = count_params(cfg, token_freqs_for(cfg, job.data), job.counts or None)
        element = torch.empty((), dtype=TORCH_DTYPES[cfg.dtype]).element_size()
        nbytes, flops = train_step_cost(cfg, pc, batch, seq_len, element)
        row = timed_row("train", f"step {f} {batch}×{seq_len}", job.timer.samples_s()[warmup:], ctx.probe,
                        nbytes=nbytes, flops=flops)  # fmt: skip
        out[f] = replace(row, items=batch * seq_len)
    return with_goals(out)


def with_goals(out: dict[str, Row]) -> list[Row]:
    """{family: step row} -> the rows with their goals: dense the baseline, L3 ≥ L3_GOAL × dense's speed,
    MoE ÷ dense for comparison."""
    dense = out["dense"]
    return [
        dense.without_goal(BASELINE),
        ratio_goal(out["l3"], dense, L3_GOAL, "dense"),
        replace(out["moe"], value=dense.median_s / out["moe"].median_s).without_goal(COMPARISON),
    ]
