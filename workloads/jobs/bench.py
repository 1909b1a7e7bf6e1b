"""Train throughput of the matched dense / L3 / MoE models side by side: `python -m workloads.jobs.bench`.

The preset's three families are iso-active (L3 and MoE also iso-total, `presets.get`); L3 runs once per
table optimizer (`l3_optimizer`: variant "l3:<choice>", plain "l3" is dense AdamW). All variants are built
in this process exactly as `workloads.jobs.train.run` builds them (`build_loop`) and their optimizer steps
are interleaved one by one (dense, l3, ..., moe, dense, ...), so load changes on a shared machine hit each
alike. Per variant: wall-clock tokens/s from the median step time (StepTimer, warm-up steps excluded), on
CPU tokens per CPU-second of this process (less sensitive to other processes taking the cores), the
L3 tables' optimizer state bytes, and the host reads of one training step (`count_host_reads`).
Goals (issues 4 and 15): L3 ≥ 0.95× dense with each table optimizer, L3 ≥ 1.3× MoE.
"""

import argparse
import os
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from workloads.data import DataConfig
from workloads.jobs.result import JobContext
from workloads.jobs.setup import token_freqs_for
from workloads.jobs.train import TrainJobConfig, build_loop
from workloads.l3.host_reads import count_host_reads
from workloads.models.accounting import count_params

VARIANTS = ("dense", "l3", "l3:sparse_adam", "l3:rowwise_adagrad", "moe")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workloads.jobs.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=12, help="steps per family, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps of each family")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-documents", type=int, default=400, help="of the built-in corpus")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="family[:l3_optimizer]")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    """{variant: {"wall": TimingStats, "cpu_s": [per timed step], "active": n, "total": n, "opt_bytes": n,
    "reads": n}}."""
    data = DataConfig(max_documents=args.max_documents)
    loops = {}
    for variant in args.variants:
        family, _, choice = variant.partition(":")
        cfg = TrainJobConfig(
            preset=args.preset, family=family, data=data, seq_len=args.seq_len, batch_size=args.batch_size,
            steps=args.steps, timing_warmup_steps=args.warmup, device=args.device,
            l3_optimizer=choice or "adamw",
        )  # fmt: skip
        loops[variant] = build_loop(cfg, JobContext(cache_dir=args.cache_dir))
    cpu: dict[str, list[float]] = {v: [] for v in loops}
    reads: dict[str, int] = {}
    for step in range(args.steps):
        for variant, job in loops.items():
            c0 = time.process_time()
            if step == 0:  # untimed warm-up step: count its host reads (each is a sync on a GPU)
                with count_host_reads() as counted:
                    loss = job.step(step)
                reads[variant] = sum(counted.values())
            else:
                loss = job.step(step)
            if args.device == "cpu":
                cpu[variant].append(time.process_time() - c0)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{variant}: loss is {loss.item()} at step {step}")
    out = {}
    for variant, job in loops.items():
        pc = count_params(job.model_cfg, token_freqs_for(job.model_cfg, job.data), job.counts or None)
        out[variant] = {"wall": job.timer.summary(), "cpu_s": cpu[variant][args.warmup :]}
        out[variant] |= {"active": pc.active, "total": pc.total, "reads": reads[variant]}
        out[variant]["opt_bytes"] = job.optimizer_bytes().get("l3_tables", 0)
        out[variant]["n_l3"] = len(job.model_cfg.l3.positions) if job.model_cfg.l3 else 0
    return out


def _ratio(values: dict[str, float], a: str, b: str) -> str:
    return f"{values[a] / values[b]:.2f}×" if b in values else ""


def table(args: argparse.Namespace, res: dict[str, dict], load: tuple[float, float]) -> Table:
    tokens = args.batch_size * args.seq_len
    wall = {f: tokens / r["wall"].median_s for f, r in res.items()}
    cpu = {f: tokens / statistics.median(r["cpu_s"]) for f, r in res.items() if r["cpu_s"]}
    t = Table(
        title=f"train tokens/s, preset {args.preset!r} on {args.device} (torch threads "
        f"{torch.get_num_threads()}), batch {args.batch_size}×{args.seq_len}, {args.steps - args.warmup} "
        "timed steps each, interleaved",
        caption=f"load average (1 min) before {load[0]:.2f}, after {load[1]:.2f} on {os.cpu_count()} cores; "
        "goals: L3 ≥ 0.95× dense (each table optimizer), L3 ≥ 1.3× MoE; host reads/step: fwd + bwd of "
        "every micro-batch and the optimizer step (a row-sparse optimizer adds one nonzero per table, not a "
        "counted read on CPU)",
    )
    columns = ["variant", "active / total", "tokens/s", "step s p10 / med / p90", "÷ dense", "÷ moe"]
    if cpu:
        columns += ["tokens/CPU-s", "÷ dense (CPU)", "÷ moe (CPU)"]
    columns += ["L3 opt. state MB", "host reads/step (per L3 call)"]
    for col in columns:
        t.add_column(col, justify="left" if col == "variant" else "right")
    for f, r in res.items():
        s = r["wall"]
        spread = f"{s.p10_s:.3f} / {s.median_s:.3f} / {s.p90_s:.3f}"
        params = f"{r['active'] / 1e6:.2f}M / {r['total'] / 1e6:.2f}M"
        row = [
            f,
            params,
            f"{wall[f]:,.0f}",
            spread,
            _ratio(wall, f, "dense"),
            _ratio(wall, f, "moe"),
        ]
        if cpu:
            row += [f"{cpu[f]:,.0f}", _ratio(cpu, f, "dense"), _ratio(cpu, f, "moe")]
        per_call = f" ({r['reads'] / r['n_l3']:.0f})" if r["n_l3"] else ""
        row += [f"{r['opt_bytes'] / 1e6:,.1f}", f"{r['reads']}{per_call}"]
        t.add_row(*row)
    return t


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.device == "cpu" else "cuda")
    before = os.getloadavg()[0]
    start = time.perf_counter()
    res = measure(args)
    console = Console(width=max(Console().width, 120))
    console.print(table(args, res, (before, os.getloadavg()[0])))
    console.print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
