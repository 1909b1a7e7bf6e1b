"""Section `infer`: prefill and KV-cache decode of the `tiny` families as the infer job builds them
(`workloads.jobs.infer.build`: matched models, validation prompts), MoE served dropless and, for
comparison, through DeepSpeed's training layer; every generation of every variant interleaved.

Bytes and FLOPs per call from `accounting.decode_step_cost` / `prefill_cost` (a decode step reads the
experts its batch touched: counted from one recorded generation). Goals: MoE (dropless) decode ≥ 0.9×
dense at batch 1 (issue 20); L3 on the device ≥ 0.95× dense at batch 1 (issues 15, 21). At batch 8 L3
reads each distinct token's rows, so its bytes grow with the batch where dense's do not: there the goal is
≥ 0.95 of its floor ratio (dense floor ÷ L3 floor, the best L3 ÷ dense the hardware allows).
"""

from dataclasses import replace

import numpy as np
import torch

from workloads.bench.rows import BenchContext, Row, ratio_goal, timed_row
from workloads.jobs.decode import GenerationTimer, greedy_generate
from workloads.jobs.infer import InferJobConfig, build
from workloads.jobs.result import JobContext
from workloads.jobs.setup import token_freqs_for
from workloads.models.accounting import count_params, decode_step_cost, prefill_cost
from workloads.models.transformer import TORCH_DTYPES

VARIANTS = {"dense": ("dense", "dropless"), "moe": ("moe", "dropless"), "moe-ds": ("moe", "deepspeed"),
            "l3": ("l3", "dropless")}  # fmt: skip
GOALS = {"moe": (0.9, (1,)), "l3": (0.95, (1,))}  # ≥ this × dense decode, at these batch sizes
FLOOR_RATIO_GOAL = 0.95  # L3 ÷ dense at the other batch sizes, as a fraction of dense floor ÷ L3 floor


def experts_touched(model, prompts: torch.Tensor, gen_len: int) -> float:
    """Distinct experts a decode step runs, summed over the MoE layers (mean over one generation's steps)."""
    moe_layers = [b.mlp for b in model.layers if b.index in model.config.moe.positions]
    touched: list[int] = []

    def collect(out: tuple, n_tokens: int) -> None:
        if n_tokens == prompts.shape[0]:  # a decode forward (the prefill has B · prompt_len tokens)
            touched.append(sum(int((c > 0).sum()) for c in out[2].values()))

    for mlp in moe_layers:
        mlp.record_balance = True
    try:
        greedy_generate(model, prompts, gen_len, return_expert_counts=True, on_forward=collect)
    finally:
        for mlp in moe_layers:
            mlp.record_balance = False
    return float(np.mean(touched))


def floor_ratio_goal(row: Row, dense: Row) -> Row:
    """`row` with its speed ratio to dense and the goal "≥ FLOOR_RATIO_GOAL of the floor ratio"."""
    ratio, floor_ratio = dense.median_s / row.median_s, dense.floor_s / row.floor_s
    goal = f"≥{FLOOR_RATIO_GOAL:g}×{floor_ratio:.2f} (floors)"
    return row.with_goal(goal, ratio >= FLOOR_RATIO_GOAL * floor_ratio, ratio)


def rows(ctx: BenchContext) -> list[Row]:
    prompt_len, gen_len = (32, 6) if ctx.quick else (64, 24)
    job = InferJobConfig("tiny", "dense", batch_sizes=(1, 8), prompt_len=prompt_len, gen_len=gen_len,
                         l3_placement="device", device=str(ctx.device))  # fmt: skip
    built = {
        name: build(replace(job, family=f, moe_impl=impl), JobContext())
        for name, (f, impl) in VARIANTS.items()
    }
    out: list[Row] = []
    for bs in job.batch_sizes:
        timers = {name: GenerationTimer(ctx.device, gen_len, warmup=1) for name in built}
        for _ in range(1 + ctx.rounds):
            for name, b in built.items():
                timers[name].generate(b.model, b.prompts[:bs])
        decode: dict[str, Row] = {}
        for name, b in built.items():
            cfg = b.model_cfg
            pc = count_params(cfg, token_freqs_for(cfg, b.data), b.counts or None)
            element = torch.empty((), dtype=TORCH_DTYPES[cfg.dtype]).element_size()
            touched = experts_touched(b.model, b.prompts[:bs], gen_len) if cfg.moe and name == "moe" else None
            d_bytes, d_flops = decode_step_cost(cfg, pc, bs, prompt_len + gen_len / 2, touched, element)
            p_bytes, p_flops = prefill_cost(cfg, pc, bs, prompt_len, element)
            t = timers[name]
            prefill = timed_row("infer", f"prefill bs{bs} {name}", t.prefill.samples_s()[1:], ctx.probe,
                                nbytes=p_bytes, flops=p_flops)  # fmt: skip
            step = timed_row("infer", f"decode bs{bs} {name}", t.decode.samples_s()[gen_len - 1 :], ctx.probe,
                             nbytes=d_bytes, flops=d_flops)  # fmt: skip
            note = "" if touched is None else f"{touched:.1f} experts touched per step (all MoE layers)"
            decode[name] = replace(step, items=bs, note=note)
            out.append(replace(prefill, items=bs * prompt_len))
        for name, row in decode.items():
            at_least, sizes = GOALS.get(name, (None, ()))
            if name != "dense" and at_least is not None and bs in sizes:
                row = ratio_goal(row, decode["dense"], at_least, "dense")
            elif name == "l3" and row.floor_s and decode["dense"].floor_s:
                row = floor_ratio_goal(row, decode["dense"])
            elif name != "dense":
                row = replace(row, value=decode["dense"].median_s / row.median_s, goal="÷ dense")
            out.append(row)
    return out
