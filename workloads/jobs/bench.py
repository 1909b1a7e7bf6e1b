"""Train throughput of the matched dense / L3 / MoE models side by side: `python -m workloads.jobs.bench`.

The preset's three families are iso-active (L3 and MoE also iso-total, `presets.get`). Each round trains
every family for `--steps` steps through `workloads.jobs.train.run` (StepTimer: warm-up steps excluded,
median step time); rounds interleave the families so that load drift on a shared machine hits all of
them alike, and the table reports the median over rounds. Goals (issue 4): L3 ≥ 0.97× dense, ≥ 1.3× MoE.
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
from workloads.jobs.train import TrainJobConfig, run

FAMILIES = ("dense", "l3", "moe")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workloads.jobs.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=8, help="steps per family per round (incl. warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-documents", type=int, default=400, help="of the built-in corpus")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default=None)
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    """{family: {tokens_per_s: [per round], step_time_s: [...], p10 / p90: [...], params_*}}."""
    data = DataConfig(max_documents=args.max_documents)
    out: dict[str, dict] = {
        f: {"tokens_per_s": [], "step_time_s": [], "p10": [], "p90": []} for f in FAMILIES
    }
    for _ in range(args.rounds):
        for family in FAMILIES:
            cfg = TrainJobConfig(
                preset=args.preset, family=family, data=data, seq_len=args.seq_len,
                batch_size=args.batch_size, steps=args.steps, timing_warmup_steps=args.warmup,
                eval_batches=1, device=args.device,
            )  # fmt: skip
            m = run(cfg, JobContext(cache_dir=args.cache_dir)).metrics
            row = out[family]
            row["tokens_per_s"].append(m["train/tokens_per_s"])
            row["step_time_s"].append(m["train/step_time_s"])
            row["p10"].append(m["train/step_time_s_p10"])
            row["p90"].append(m["train/step_time_s_p90"])
            row["active"], row["total"] = m["params_active"], m["params_total"]
    return out


def table(args: argparse.Namespace, res: dict[str, dict], load: tuple[float, float]) -> Table:
    med = {f: statistics.median(r["tokens_per_s"]) for f, r in res.items()}
    timed = args.steps - args.warmup
    t = Table(
        title=f"train tokens/s, preset {args.preset!r} on {args.device} (threads {torch.get_num_threads()}), "
        f"batch {args.batch_size}×{args.seq_len}, {timed} timed steps × {args.rounds} rounds",
        caption=f"load average (1 min) before {load[0]:.2f}, after {load[1]:.2f}; goals: L3 ≥ 0.97× dense, "
        "L3 ≥ 1.3× MoE",
    )
    for col in ("family", "active", "total", "tokens/s", "step s (p10-p90)", "per round", "÷ dense", "÷ moe"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for f, r in res.items():
        spread = f"{statistics.median(r['step_time_s']):.3f} ({min(r['p10']):.3f}-{max(r['p90']):.3f})"
        rounds = " ".join(f"{x:,.0f}" for x in r["tokens_per_s"])
        t.add_row(
            f, f"{r['active'] / 1e6:.2f}M", f"{r['total'] / 1e6:.2f}M", f"{med[f]:,.0f}", spread, rounds,
            f"{med[f] / med['dense']:.2f}×", f"{med[f] / med['moe']:.2f}×",
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.device == "cpu" else "cuda")
    before = os.getloadavg()[0]
    start = time.perf_counter()
    res = measure(args)
    console = Console(width=max(Console().width, 120))
    console.print(table(args, res, (before, os.getloadavg()[0])))
    console.print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
