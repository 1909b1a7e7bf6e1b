"""`python -m workloads.bench profile [--threads 2 1] [--quick] [--goals ..]` (not in `make bench`, too long):
where the time goes in each issue-21 goal the bench misses, on its bench row's workload (decode bs1 L3 and
MoE ÷ dense, the L3 sublayer ÷ MLP at 1 position, the train step L3 ÷ dense, the lookup at 8 / 64 positions):
unprofiled times and floors, the step by part and top ops (`profiling`), the fused kernel's numba stages.
"""

import argparse
import contextlib
import itertools
import os
from dataclasses import replace

import numpy as np
import torch
from rich.console import Console

from workloads.bench import infer as infer_section
from workloads.bench import kernel_stages
from workloads.bench import l3 as l3_section
from workloads.bench import layer as layer_section
from workloads.bench.profiling import function_range, ops_table, part_ranges, parts_table, profile_steps
from workloads.bench.report import si
from workloads.bench.rows import interleaved
from workloads.data import DataConfig
from workloads.jobs import infer
from workloads.jobs.result import JobContext
from workloads.jobs.train import TrainJobConfig, build_loop
from workloads.kernels.l3_lookup import small_cpu, sublayer_cpu
from workloads.kernels.l3_lookup.op import l3_lookup
from workloads.kernels.mlp_decode import cpu as mlp_cpu
from workloads.l3 import layer as l3_layer
from workloads.models import transformer
from workloads.probe import MachineProbe, probe

GOALS = ("decode", "sublayer", "train", "lookup")


def model_parts(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(part, module) of a Transformer: embedding, attention, mlp (or moe), l3, norm, lm_head."""
    parts = [("embedding", model.tok_emb), ("norm", model.norm), ("lm_head", model.lm_head)]
    for block in model.layers:
        for child, part in (
            ("attn", "attention"),
            ("mlp", "mlp"),
            ("l3", "l3"),
            ("attn_norm", "norm"),
            ("mlp_norm", "norm"),
        ):
            if getattr(block, child, None) is not None:
                parts.append((part, getattr(block, child)))
    return parts


@contextlib.contextmanager
def kernel_ranges():
    """Part ranges around the L3 entry points: the fused sublayer (its numba kernel inside), the lookup."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(function_range(sublayer_cpu, "run", "l3 fused: torch↔numpy"))
        stack.enter_context(function_range(l3_layer, "l3_lookup", "l3 lookup op"))
        for owner, attrs, part in (
            (sublayer_cpu, ("_serial", "_parallel"), "l3 fused: numba kernel"),
            (small_cpu, ("_lookup_serial", "_lookup_parallel"), "lookup: numba kernel"),
        ):
            for attr in attrs:
                if getattr(owner, attr, None) is not None:
                    stack.enter_context(function_range(owner, attr, part))
        yield


def report(
    console: Console,
    title: str,
    steps: dict,
    floors,
    pr: MachineProbe,
    rounds: int,
    n: int,
    ratio: bool = True,
) -> None:
    """Time each step callable unprofiled (interleaved), print each one's floor (`floors()`: {name: (bytes,
    FLOPs, working set or None)}, called after the timing) and its speed ratio to the first, then profile
    `n` calls of each and print the parts and top-ops tables."""
    times = {k: float(np.median(v)) for k, v in interleaved(steps, rounds).items()}
    console.print(f"\n[bold]{title}[/bold]", highlight=False)
    first = next(iter(times))
    for name, (nbytes, flops, working_set) in floors().items():
        t, floor = times[name], pr.floor_s(nbytes, flops, None, working_set)
        rate = pr.read_rate(working_set or nbytes) / 1e9
        vs = f", speed ÷ {first}'s {times[first] / t:.2f}" if ratio and name != first else ""
        console.print(
            f"  {name}: {_time(t)} unprofiled{vs}; floor {_time(floor)} = {100 * floor / t:.0f}% "
            f"({si(nbytes)}B at {rate:.0f} GB/s, {si(flops)}FLOP)",
            highlight=False,
        )
    profiles = {name: profile_steps(step, n) for name, step in steps.items()}
    console.print(f"  µs per step by part, {n} profiled steps each (the profiler adds time per op):")
    console.print(parts_table(profiles))
    console.print(ops_table(profiles))


def _time(seconds: float) -> str:
    return f"{1e3 * seconds:,.1f} ms" if seconds >= 0.01 else f"{1e6 * seconds:,.0f} µs"


class Decoder:
    """One decode step per call (batch of `prompts`), the context cycling P .. P + gen_len - 1."""

    def __init__(self, model, prompts: torch.Tensor, gen_len: int):
        self.model, self.P, self.gen, self.t = model, prompts.shape[1], gen_len, 0
        self.cache = model.new_cache(prompts.shape[0], self.P + gen_len)
        with torch.no_grad():
            self.nxt = model(prompts, self.cache)[0][:, -1:].argmax(-1)

    @torch.no_grad()
    def __call__(self) -> None:
        self.nxt = self.model(self.nxt, self.cache, start_pos=self.P + self.t)[0][:, -1:].argmax(-1)
        self.t = (self.t + 1) % self.gen


def decode(console: Console, pr: MachineProbe, quick: bool) -> None:
    """Decode bs1 of dense, L3, MoE (dropless) and its `moe-1x` control (`infer_section.alias_experts`):
    per part, where L3's and MoE's steps spend more than dense's."""
    job = replace(infer_section.JOB, device="cpu")
    if quick:
        job = replace(job, prompt_len=32, gen_len=8)
    control = infer_section.CONTROL
    families = {"dense": "dense", "l3": "l3", "moe": "moe", control: "moe"}
    built = {name: infer.build(replace(job, family=f), JobContext()) for name, f in families.items()}
    infer_section.alias_experts(built[control].model)
    steps = {name: Decoder(b.model, b.prompts[:1], job.gen_len) for name, b in built.items()}
    parts = [p for b in built.values() for p in model_parts(b.model)]
    # A served block runs its fused decode MLP (`mlp_cpu.run`: its mlp_norm and residual add inside), or
    # at batch 1 without the kernel dropless_one_token, past the module hooks of its mlp and mlp_norm.
    served = contextlib.ExitStack()
    served.enter_context(function_range(transformer, "dropless_one_token", "mlp"))
    served.enter_context(function_range(mlp_cpu, "run", "mlp"))
    with part_ranges(parts), kernel_ranges(), served:
        goals = {f: infer_section.GOALS[f][0] for f in ("l3", "moe")}
        title = f"decode bs1 ÷ dense: goals L3 ≥{goals['l3']:g}×, MoE ≥{goals['moe']:g}× dense (speed)"
        context = job.prompt_len + job.gen_len / 2

        floors = lambda: {  # noqa: E731
            n: infer_section.decode_cost(b, 1, context, control=n == control) for n, b in built.items()
        }
        report(console, title, steps, floors, pr, 3 if quick else 9, 8 if quick else 62)


def sublayer(console: Console, pr: MachineProbe, quick: bool) -> None:
    data, layer, mlp = layer_section.l3_and_mlp()  # as the layer and lookup sections build them
    windows, x, k = layer_section._windows(data, 1), torch.randn(1, 1, layer_section.DIM), itertools.count()
    steps = {"mlp": lambda: mlp(x), "l3": lambda: layer(x, windows[next(k) % len(windows)])}
    parts = [("linear", m) for m in (mlp.ffn.w1, mlp.ffn.w3, mlp.ffn.w2, layer.up, layer.mix)]
    parts += [("norm", mlp.norm), ("norm", layer.norm_in), ("norm", layer.norm_out)]
    with (
        torch.no_grad(),
        part_ranges(parts),
        kernel_ranges(),
        function_range(layer, "lookup_tables", "l3 tables"),
        function_range(mlp_cpu, "run", "mlp fused kernel"),
    ):
        title = (
            f"L3 sublayer ÷ iso-active MLP, 1 position: goal ≤{layer_section.ONE_POSITION_GOAL:g}× its time"
        )
        l3_cost = np.mean([layer_section.l3_moved(layer, w) for w in windows], axis=0)
        floors = lambda: {"mlp": (*layer_section.mlp_moved(mlp, 1), None), "l3": (*l3_cost, None)}  # noqa: E731
        report(console, title, steps, floors, pr, 3 if quick else 9, 20 if quick else 400)
    for parallel in (False, True) if torch.get_num_threads() > 1 else (False,):
        calls = kernel_stages.stage_calls(layer, windows, x, parallel)
        with torch.no_grad():
            times = interleaved({k: c for k, (c, _) in calls.items()}, 3 if quick else 9, inner=20)
        how = f"parallel over {torch.get_num_threads()} numba threads" if parallel else "serial"
        console.print(f"  the fused kernel's numba stages alone ({how}), interleaved:", highlight=False)
        medians = {k: float(np.median(v)) for k, v in times.items()}
        console.print(kernel_stages.stages_table(medians, {k: b for k, (_, b) in calls.items()}, pr))


def train(console: Console, pr: MachineProbe, quick: bool) -> None:
    batch, seq_len = (4, 64) if quick else (8, 256)
    rounds, n = (2, 2) if quick else (5, 4)
    data = DataConfig(max_documents=100 if quick else 400)
    variants = {
        "dense": ("dense", "adamw"),
        "l3 adamw": ("l3", "adamw"),
        "l3 rowwise": ("l3", "rowwise_adagrad"),
    }
    cfg = TrainJobConfig(
        preset="tiny",
        family="dense",
        data=data,
        seq_len=seq_len,
        batch_size=batch,
        steps=2 + rounds + n + 2,
        device="cpu",
    )
    loops = {
        name: build_loop(replace(cfg, family=f, l3_optimizer=o), JobContext())
        for name, (f, o) in variants.items()
    }
    steps = {name: _stepper(job) for name, job in loops.items()}
    for step in steps.values():
        step()  # the first step allocates the optimizer's state
    goals = ", ".join(f"{o} ≥{g:g}×" for o, g in l3_section.TRAIN_GOALS.items() if o != "sparse_adam")
    with part_ranges([p for job in loops.values() for p in model_parts(job.model)]), kernel_ranges():
        report(
            console,
            f"train step {batch}×{seq_len}, L3 ÷ dense (speed): goals {goals}",
            steps,
            lambda: {
                name: (*l3_section.train_step_floor(job, variants[name][1], batch, seq_len), None)
                for name, job in loops.items()
            },
            pr,
            rounds,
            n,
        )


def _stepper(job):
    k = itertools.count()
    return lambda: job.step(next(k))


def lookup(console: Console, pr: MachineProbe, quick: bool) -> None:
    data, layer, _ = layer_section.l3_and_mlp()
    keys, values, offsets = layer.keys.detach(), layer.values.detach(), layer.offsets
    steps, floors = {}, {}
    for n in (8,) if quick else (8, 64):
        windows, q, k = layer_section._windows(data, n), torch.randn(n, layer_section.DIM), itertools.count()

        def op(w=windows, q=q, k=k):
            return l3_lookup(q, w[next(k) % len(w)].view(-1), keys, values, offsets)

        steps[f"{n} pos"] = op
        floors[f"{n} pos"] = (*np.mean([l3_section.lookup_moved(layer, w) for w in windows], axis=0), None)
    goal = f"≥{l3_section.LOOKUP_READ_GOAL:.0%} of the read bandwidth of its working set (% of floor)"
    with torch.no_grad(), kernel_ranges():
        report(
            console,
            f"L3 lookup op: goal {goal}",
            steps,
            lambda: floors,
            pr,
            3 if quick else 9,
            20 if quick else 200,
            ratio=False,
        )


RUN = {"decode": decode, "sublayer": sublayer, "train": train, "lookup": lookup}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m workloads.bench profile", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch intra-op thread counts")
    p.add_argument("--goals", nargs="+", choices=GOALS, default=list(GOALS))
    p.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run, not for numbers)")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads or ()):
        p.error(f"--threads must be >= 1, got {args.threads}")
    console = Console(width=max(Console().width, 120))
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        load, pr = os.getloadavg()[0], probe("cpu")
        console.print(
            f"[bold]profile: torch threads {threads}, {os.cpu_count()} cores, load avg (1 min) {load:.2f}; "
            f"probed read {pr.read_bytes_per_s / 1e9:.1f} GB/s[/bold]",
            highlight=False,
        )
        for goal in args.goals:
            RUN[goal](console, pr, args.quick)


if __name__ == "__main__":
    main()
