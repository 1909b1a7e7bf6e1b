"""Section `infer`: prefill and KV-cache decode of the `tiny` families as the quickstart's infer job builds
and times them (`infer.build`, then `rounds.measure`, the job's own timing core, on the quickstart's infer
section `JOB`), MoE served dropless and, for comparison, through DeepSpeed's training layer. Decode ratios
to dense are per round of alternating generations (median, p10–p90 in the note), as the job logs them.
Details: docs/workloads.md#workloadsbenchinfer."""

from dataclasses import replace

import numpy as np
import torch

from workloads.bench.rows import BASELINE, COMPARISON, REPORTED, BenchContext, Row, timed_row
from workloads.data import BuiltinSource, DataConfig
from workloads.jobs import infer, rounds
from workloads.jobs.decode import greedy_generate
from workloads.jobs.infer import InferJobConfig, build, placement_label
from workloads.jobs.result import JobContext
from workloads.jobs.rounds import measure
from workloads.jobs.setup import corpus_params
from workloads.models.accounting import decode_step_cost, decode_working_set_bytes, mlp_params, prefill_cost
from workloads.models.moe import MoEMLP
from workloads.models.transformer import TORCH_DTYPES

VARIANTS = {
    "dense": ("dense", "dropless"),
    "moe": ("moe", "dropless"),
    "moe-ds": ("moe", "deepspeed"),
    "l3": ("l3", "dropless"),
    "moe-1x": ("moe", "dropless"),
}
# The control of MoE's decode ratio: the moe variant's model with every expert slot of a layer aliased to
# its expert 0 (`alias_experts`). It routes and runs the same ops as moe, but its steps keep re-reading
# one expert per layer, dense's working set: moe-1x ÷ dense is the serving code's cost; moe ÷ moe-1x
# the cost of the working set that outgrows the cache (the floors' ratio predicts it from the probe).
CONTROL = "moe-1x"
GOALS = {"moe": (0.9, (1,)), "l3": (0.95, (1,))}  # ≥ this × dense decode, at these batch sizes
FLOOR_RATIO_GOAL = 0.95  # L3 ÷ dense at the other batch sizes, as a fraction of dense floor ÷ L3 floor
# suites/quickstart.yaml's infer section, family aside (tests/orchestrator/test_ratio_check.py holds them
# equal): `make demo`'s report and this section take their decode ratios from one measurement.
# Loop lengths: a round's generation has 31 decode steps (its median makes the round's ratio), and 24
# counted rounds after 2 warm-up ones give the median and p10/p90 of the ratio; --rounds does not apply.
JOB = InferJobConfig(
    "tiny",
    "dense",
    data=DataConfig(source=BuiltinSource(content="docs")),
    batch_sizes=(1, 8),
    prompt_len=64,
    gen_len=32,
    l3_placement="both",
    warmup=2,
    repeats=24,
)


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


def rows(ctx: BenchContext) -> list[Row]:
    job = replace(JOB, device=str(ctx.device))
    if ctx.quick:
        job = replace(job, prompt_len=32, gen_len=6, repeats=2)
    built = {
        name: build(replace(job, family=f, moe_impl=impl), JobContext())
        for name, (f, impl) in VARIANTS.items()
    }
    alias_experts(built[CONTROL].model)
    out: list[Row] = []
    for bs in job.batch_sizes:
        measured = measure(
            {n: b.model for n, b in built.items()},
            built["dense"].prompts[:bs],
            job,
            {n: b.scone for n, b in built.items()},
        )
        decode: dict[str, Row] = {}
        for (name, placement), t in measured.timers.items():
            b = built[name]
            touched = experts_touched(b.model, b.prompts[:bs], job.gen_len) if name == "moe" else None
            d_bytes, d_flops, working_set = decode_cost(
                b, bs, job.prompt_len + job.gen_len / 2, touched, control=name == CONTROL
            )
            cfg, pc, element = _accounting(b)
            p_bytes, p_flops = prefill_cost(cfg, pc, bs, job.prompt_len, element)
            label = name if placement == "device" else f"{name} {placement_label(placement, ctx.device)}"
            prefill = timed_row(
                "infer",
                f"prefill bs{bs} {label}",
                t.prefill.samples_s()[job.warmup :],
                ctx.probe,
                nbytes=p_bytes,
                flops=p_flops,
            )
            step = timed_row(
                "infer",
                f"decode bs{bs} {label}",
                t.decode.samples_s()[t.decode.warmup :],
                ctx.probe,
                nbytes=d_bytes,
                flops=d_flops,
                working_set=working_set,
            )
            note = "" if touched is None else f"{touched:.1f} experts touched per step (all MoE layers)"
            note = "control: moe's routes on one expert per layer" if name == CONTROL else note
            decode[label] = replace(step, items=bs, note=note)
            out.append(replace(prefill, items=bs * job.prompt_len).without_goal(REPORTED))
        out += [
            decode_goal(row, label, bs, measured.metrics.get(label), decode.get("dense"))
            for label, row in decode.items()
        ]
    return out


def decode_goal(row: Row, label: str, bs: int, m: dict | None, dense: Row | None) -> Row:
    """A decode row with its goal: dense is the baseline; a row with a ratio to dense in its metrics `m`
    gets `_vs_dense`'s goal; any other is for comparison."""
    ratio = None if m is None else m.get(rounds.VS_DENSE)
    if label == "dense":
        return row.without_goal(BASELINE)
    if ratio is None:
        return row.without_goal(COMPARISON)
    return _vs_dense(row, label, bs, ratio, m, dense)


def _accounting(b: infer.Built) -> tuple:
    """(model config, its ParamCount, element bytes) of a built infer job, for `accounting`'s costs."""
    cfg = b.model_cfg
    pc = corpus_params(cfg, b.data, b.counts)
    return cfg, pc, torch.empty((), dtype=TORCH_DTYPES[cfg.dtype]).element_size()


def decode_cost(
    b: infer.Built, bs: int, context: float, touched: float | None = None, control: bool = False
) -> tuple:
    """(bytes, FLOPs, working-set bytes) of one decode step of built job `b` at batch `bs` and mean
    context `context`: `accounting.decode_step_cost` and `decode_working_set_bytes`. control: `b` is the
    `CONTROL` (`alias_experts`): each MoE layer has one expert's weights, so a step reads one per layer
    and the other experts leave the working set."""
    cfg, pc, element = _accounting(b)
    resident = len(cfg.moe.positions) if control else None
    nbytes, flops = decode_step_cost(cfg, pc, bs, context, resident or touched, element)
    working_set = decode_working_set_bytes(cfg, pc, bs, context, element)
    if control:
        unreached = len(cfg.moe.positions) * cfg.moe.num_experts - resident
        working_set -= unreached * mlp_params(cfg.dim, cfg.moe.ffn_dim) * element
    return nbytes, flops, working_set


def alias_experts(model) -> None:
    """Point every expert slot of each MoE layer of a dropless-served `model` at the layer's expert 0."""
    for block in model.layers:
        if isinstance(block.mlp, MoEMLP):
            experts = block.mlp.experts
            for e in range(1, len(experts)):
                experts[e] = experts[0]
    model.serve()  # the serving references and the fused kernel's stacks follow


def _vs_dense(row: Row, name: str, bs: int, ratio: float, m: dict, dense: Row | None = None) -> Row:
    """The row with its decode ratio to dense (median over rounds, p10–p90 and the floors' ratio, dense
    floor ÷ this row's floor, in the note) and its goal. The floors' ratio is what the hardware gives
    at the floors: an MoE's decode step reads as many bytes as dense's, but its steps keep touching every
    expert, so its working set (and its floor) outgrows the cache that holds the dense model."""
    spread = f"÷ dense p10–p90 {m[rounds.VS_DENSE_P10]:.3f}–{m[rounds.VS_DENSE_P90]:.3f}"
    if dense is not None and row.floor_s and dense.floor_s:  # the ratio were both at their floors
        spread += f"; floors' ratio {dense.floor_s / row.floor_s:.2f}"
    note = f"{row.note}; {spread}" if row.note else spread
    row = replace(row, note=note, value_p10=m[rounds.VS_DENSE_P10], value_p90=m[rounds.VS_DENSE_P90])
    at_least, sizes = GOALS.get(name, (None, ()))
    if at_least is not None and bs in sizes:
        return row.with_goal(f"≥{at_least:g}× dense", ratio >= at_least, ratio)
    if name == "l3" and dense is not None and row.floor_s and dense.floor_s:
        return floor_ratio_goal(row, dense, ratio)
    return replace(row, value=ratio).without_goal(COMPARISON)


def floor_ratio_goal(row: Row, dense: Row, ratio: float | None = None) -> Row:
    """`row` with its speed ratio to dense (`ratio`, else the ratio of the medians) and the goal
    "≥ FLOOR_RATIO_GOAL of the floor ratio" (dense floor ÷ this row's floor)."""
    ratio = dense.median_s / row.median_s if ratio is None else ratio
    floor_ratio = dense.floor_s / row.floor_s
    goal = f"≥{FLOOR_RATIO_GOAL:g}×{floor_ratio:.2f} (floors)"
    return row.with_goal(goal, ratio >= FLOOR_RATIO_GOAL * floor_ratio, ratio)
