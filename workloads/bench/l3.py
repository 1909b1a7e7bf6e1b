"""Sections of issue 21 (L3 at the roofline): `lookup`, `offload`, `l3_train`.
Details: docs/workloads.md#workloadsbenchl3."""

from dataclasses import replace

import numpy as np
import torch

from workloads.bench.infer import decode_cost
from workloads.bench.layer import DIM, ONE_POSITION_GOAL, _windows, l3_and_mlp, l3_moved, mlp_moved
from workloads.bench.rows import BASELINE, COMPARISON, BenchContext, Row, interleaved, ratio_goal, timed_row
from workloads.bench.train import stepped_rows
from workloads.jobs import infer
from workloads.jobs.decode import GenerationTimer
from workloads.jobs.result import JobContext
from workloads.jobs.setup import corpus_params
from workloads.kernels.l3_lookup.op import l3_lookup
from workloads.l3.layer import L3Layer
from workloads.l3.offload import offload_l3_tables
from workloads.models.accounting import l3_row_width, train_step_cost

LOOKUP_READ_GOAL = 0.6  # of the probed read bandwidth, at >= 8 positions
OFFLOAD_GOAL = 0.97
TRAIN_GOALS = {"adamw": 0.93, "sparse_adam": 0.97, "rowwise_adagrad": 0.97}
# Accesses per touched table element in a row-sparse step, at the least: weight read in the forward and
# the backward, gradient written and read, weight read and written by the optimizer; lazy Adam also reads
# and writes both moments (row-wise Adagrad's one float per row is negligible).
ROW_SPARSE_ACCESSES = {"sparse_adam": 10, "rowwise_adagrad": 6}


def lookup_moved(layer: L3Layer, ids: torch.Tensor) -> tuple[float, float]:
    """(bytes, FLOPs) of the lookup op over `ids`: the key and value rows of the distinct ids, read once;
    2 FLOPs per element of every row looked up (a score's dot product, the values' weighted sum)."""
    width = layer.dim if layer.tied else layer.dim + layer.d_emb
    counts = layer.counts()
    nbytes = float(counts[ids.reshape(-1).unique()].sum()) * width * layer.keys.element_size()
    return nbytes, 2.0 * float(counts[ids.reshape(-1)].sum()) * width


def lookup(ctx: BenchContext) -> list[Row]:
    data, layer, mlp = l3_and_mlp()
    keys, values, offsets = layer.keys.detach(), layer.values.detach(), layer.offsets
    out: list[Row] = []
    for n in (1, 8) if ctx.quick else (1, 8, 64):
        windows, x = _windows(data, n), torch.randn(1, n, DIM)
        q = torch.randn(n, DIM)
        state = {"k": 0}

        def op(q=q, windows=windows, state=state):
            state["k"] = (state["k"] + 1) % len(windows)
            return l3_lookup(q, windows[state["k"]].view(-1), keys, values, offsets)

        def sublayer(x=x, windows=windows, state=state):
            # Half the windows away from the op's: not the rows the op has just pulled into the cache, so
            # the sublayer reads its rows from as far as in the `layer` section, which times it alone.
            return layer(x, windows[(state["k"] + len(windows) // 2) % len(windows)])

        fns = {"lookup": op, "sublayer": sublayer, "mlp": lambda x=x: mlp(x)}
        with torch.no_grad():
            s = interleaved(fns, ctx.rounds, inner=5 if ctx.quick else 20)
        nbytes, flops = np.mean([lookup_moved(layer, w) for w in windows], axis=0)
        row = timed_row(
            "lookup", f"lookup op {n} pos", s["lookup"], ctx.probe, nbytes=nbytes, flops=flops, items=n
        )
        if n >= 8:
            row = row.with_goal(f"≥{LOOKUP_READ_GOAL:.0%} read bw", row.floor_frac >= LOOKUP_READ_GOAL)
        out.append(row if n >= 8 else row.without_goal(COMPARISON))
        if n == 1:
            mb, mf = mlp_moved(mlp, n)
            mlp_row = timed_row("lookup", "mlp 1 pos", s["mlp"], ctx.probe, nbytes=mb, flops=mf, items=1)
            sb, sf = np.mean([l3_moved(layer, w) for w in windows], axis=0)
            sub = timed_row(
                "lookup", "l3 sublayer 1 pos", s["sublayer"], ctx.probe, nbytes=sb, flops=sf, items=1
            )
            times = sub.median_s / mlp_row.median_s
            goal = f"≤{ONE_POSITION_GOAL:g}× mlp time"
            out += [mlp_row.without_goal(BASELINE), sub.with_goal(goal, times <= ONE_POSITION_GOAL, times)]
    return out


def offload(ctx: BenchContext) -> list[Row]:
    prompt_len, gen_len = (32, 6) if ctx.quick else (128, 32)
    job = infer.InferJobConfig(
        "tiny",
        "l3",
        batch_sizes=(1, 8),
        prompt_len=prompt_len,
        gen_len=gen_len,
        l3_placement="both",
        device=str(ctx.device),
    )
    built = infer.build(job, JobContext())
    out: list[Row] = []
    for bs in job.batch_sizes:
        prompts = built.prompts[:bs]
        timers = {p: GenerationTimer(ctx.device, gen_len, warmup=1) for p in ("device", "offload")}
        waits: list[float] = []
        for _ in range(1 + ctx.rounds):
            timers["device"].generate(built.model, prompts)
            handle = offload_l3_tables(built.model)
            try:
                timers["offload"].generate(built.model, prompts)
                waits += handle.stats.wait_s
            finally:
                handle.remove()
        nbytes, flops, working_set = decode_cost(built, bs, prompt_len + gen_len / 2)
        rows = {
            p: timed_row(
                "offload",
                f"decode bs{bs} l3 {p}",
                t.decode.samples_s()[t.decode.warmup :],
                ctx.probe,
                nbytes=nbytes,
                flops=flops,
                working_set=working_set,
                items=bs,
            )
            for p, t in timers.items()
        }
        wait = f"wait {1e6 * np.mean(waits):.0f} µs/L3 call" if waits else "tables read in place"
        off = ratio_goal(rows["offload"], rows["device"], OFFLOAD_GOAL, "on device")
        out += [rows["device"].without_goal(BASELINE), replace(off, note=wait)]
    return out


def train_step_floor(job, optimizer: str, batch: int, seq_len: int) -> tuple[float, float]:
    """(bytes, FLOPs) of one step of `job` (a built TrainLoop) at the least: `train_step_cost`, with a
    row-sparse `optimizer` the tables' AdamW traffic replaced by the mean rows touched per step so far."""
    cfg = job.model_cfg
    pc = corpus_params(cfg, job.data, job.counts)
    element = job.model.tok_emb.weight.element_size()
    nbytes, flops = train_step_cost(cfg, pc, batch, seq_len, element)
    if optimizer in ROW_SPARSE_ACCESSES and cfg.l3 is not None:
        touched = job.l3[2] / max(len(job.l3_steps), 1)  # distinct rows per step, summed over L3 layers
        table_params = pc.by_category["l3_tables"]
        nbytes += (ROW_SPARSE_ACCESSES[optimizer] * touched * l3_row_width(cfg) - 10 * table_params) * element
    return nbytes, flops


def l3_train(ctx: BenchContext) -> list[Row]:
    variants = {"dense": {"family": "dense", "l3_optimizer": "adamw"}}
    variants |= {f"l3 {o}": {"family": "l3", "l3_optimizer": o} for o in TRAIN_GOALS}

    def floor(name, job, batch, seq_len):
        return train_step_floor(job, variants[name]["l3_optimizer"], batch, seq_len)

    rows = stepped_rows(ctx, "l3_train", variants, 2, 2 + max(3, ctx.rounds), floor)
    for opt, goal in TRAIN_GOALS.items():
        row = ratio_goal(rows[f"l3 {opt}"], rows["dense"], goal, "dense")
        rows[f"l3 {opt}"] = replace(row, note=f"floors allow {rows['dense'].floor_s / row.floor_s:.2f}×")
    rows["dense"] = rows["dense"].without_goal(BASELINE)
    return list(rows.values())
