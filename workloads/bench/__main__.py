"""`python -m workloads.bench layer|train|...|all [--threads 1 2] [--quick]`; `profile`: bench.profile.

For each thread count: set torch's intra-op threads, probe the machine at that count, run the sections,
print one table (header: device, threads, load, probe; footer: section wall times) and keep its rows;
one JSON file per invocation holds every run (`--out`, default .isosparse/bench/bench-<UTC time>.json).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from workloads.bench import report
from workloads.bench.rows import BenchContext
from workloads.bench.sections import SECTIONS, resolve
from workloads.probe import probe


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workloads.bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "sections",
        nargs="+",
        choices=[*SECTIONS, "all"],
        metavar="SECTION",
        help=f"{' | '.join(SECTIONS)} | all",
    )
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch intra-op thread counts")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per variant")
    p.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run, not for numbers)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default .isosparse/bench/...)")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads or ()):
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    return args


def run(sections: list[str], threads: int, rounds: int, quick: bool, device: str, console: Console) -> dict:
    """One thread count: probe, every section, the table with each section's wall time in its footer;
    returns the JSON record of the run."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    ctx = BenchContext(probe(device), torch.device(device), rounds=rounds, quick=quick)
    wall = {"probe": time.perf_counter() - t0}
    rows = []
    for name in sections:
        t0 = time.perf_counter()
        rows += resolve(name)(ctx)
        wall[name] = time.perf_counter() - t0
    loads = (load_before, os.getloadavg()[0])
    report.print_run(console, rows, ctx.probe, loads, wall)
    return {
        "threads": threads,
        "load_avg_1m": loads,
        "probe": ctx.probe.as_dict(),
        "wall_s": wall,
        "rows": [r.as_dict() for r in rows],
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["profile"]:  # the profile of the missed goals has its own entry (workloads.bench.profile)
        from workloads.bench import profile

        return profile.main(argv[1:])
    args = _args(argv)
    sections = list(SECTIONS) if "all" in args.sections else list(dict.fromkeys(args.sections))
    console = Console(width=max(Console().width, 130))  # the table needs ~130 columns
    runs, start = [], time.perf_counter()
    for threads in args.threads or [torch.get_num_threads()]:
        runs.append(run(sections, threads, args.rounds, args.quick, args.device, console))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or Path(".isosparse") / "bench" / f"bench-{stamp}.json"
    record = {"command": " ".join(["python -m workloads.bench", *sys.argv[1:]]), "runs": runs}
    report.write_json(out, record)
    console.print(f"total {time.perf_counter() - start:.0f} s; rows in {out}", highlight=False)


if __name__ == "__main__":
    main()
