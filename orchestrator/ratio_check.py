"""Do a suite's decode ratios agree with the interleaved benchmark? `python -m orchestrator.ratio_check
[SUITE] [--timing interleaved exclusive]`: runs the suite's infer jobs (temporary store) under each timing,
reads the report's decode ÷ dense ratios back from MLflow, then times the same resolved jobs interleaved in
this process (`run_interleaved`, the benchmark's loop) and prints both side by side; exit 1 if any
ratio differs by more than --tolerance (10%), or was measured under contention (not comparable).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator import api
from orchestrator.runs import scheduling
from orchestrator.runs.tracking import Tracker
from results import contention, load

TOLERANCE = 0.10


def agreement(report: pd.DataFrame, bench: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """report (decode_ratios rows: family, batch_size, decode_vs_dense, contended) joined with bench
    (family, batch_size, bench_vs_dense): rel_diff = report / bench − 1; ok: |rel_diff| ≤ tolerance and the
    report's ratio measured alone."""
    both = report.merge(bench, on=["family", "batch_size"], how="outer")
    both["rel_diff"] = both["decode_vs_dense"] / both["bench_vs_dense"] - 1.0
    both["ok"] = both["rel_diff"].abs().le(tolerance).fillna(False) & ~both["contended"].fillna(True).astype(
        bool
    )
    return both


def _bench_ratios(jobs, threads: int) -> pd.DataFrame:
    """The benchmark's ratios: the suite's resolved infer configs timed interleaved in this process."""
    import torch

    from workloads.jobs.infer import run_interleaved

    torch.set_num_threads(threads)
    configs = [j.config for j in jobs]
    results = {c.family: r.metrics for c, r in zip(configs, run_interleaved(configs), strict=True)}
    key = "infer/decode_tokens_per_s/bs{}"
    rows = []
    for family, m in results.items():
        for bs in configs[0].batch_sizes if family != "dense" else ():
            ratio = m[key.format(bs)] / results["dense"][key.format(bs)]
            rows.append({"family": family, "batch_size": bs, "bench_vs_dense": ratio})
    return pd.DataFrame(rows)


def check(suite: str, timing: str, threads: int, tolerance: float) -> pd.DataFrame:
    """One timing mode: the suite's infer jobs in a fresh store, then the benchmark on the same configs."""
    with tempfile.TemporaryDirectory(prefix="isosparse-ratio-check-") as home:
        os.environ["ISOSPARSE_HOME"] = home
        uri = f"sqlite:///{Path(home) / 'mlflow.db'}"
        sets = ["matrix.jobs=[infer]", f"timing.infer={timing}", "matrix.seeds=[0]"]
        run = api.run_suite(suite, sets, tracking_uri=uri, make_report=False)
        if run.exit_code:
            raise SystemExit(f"the suite's infer jobs did not all finish: {run.counts()}")
        scheduling.shutdown()  # the benchmark gets the machine to itself
        runs = load.runs_from_mlflow(Tracker(uri).search(run.suite.experiment))
        report = contention.decode_ratios(runs)[
            ["family", "batch_size", "decode_vs_dense", "source", "contended"]
        ]
        groups = {j.labels["group"] for j in run.suite.jobs}
        if len(groups) != 1:
            raise SystemExit(f"ratio_check compares one comparison group; {suite} has {sorted(groups)}")
        bench = _bench_ratios([j for j in run.suite.jobs if j.kind == "infer"], threads)
    return agreement(report, bench, tolerance).assign(timing=timing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ratio_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("suite", nargs="?", default="quickstart")
    parser.add_argument("--timing", nargs="+", default=["interleaved", "exclusive"],
                        choices=["interleaved", "exclusive", "shared"])  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the benchmark (the jobs': 1)"
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    tables = [check(args.suite, t, args.threads, args.tolerance) for t in args.timing]
    both = pd.concat(tables, ignore_index=True)
    table = Table(title=f"decode tokens/s ÷ dense: {args.suite}'s report vs the interleaved benchmark")
    for col in ("timing", "family", "batch", "report", "benchmark", "diff", "measured", "ok"):
        table.add_column(col, justify="left" if col in ("timing", "family", "measured") else "right")
    for r in both.itertuples():
        measured = "contended" if r.contended else "alone"
        numbers = (f"{r.decode_vs_dense:.3f}", f"{r.bench_vs_dense:.3f}", f"{r.rel_diff:+.1%}")
        table.add_row(r.timing, r.family, str(r.batch_size), *numbers, measured, "yes" if r.ok else "NO")
    console = Console(width=max(Console().width, 100))
    console.print(table)
    console.print(f"tolerance {args.tolerance:.0%}; load average (1, 5, 15 min) after: {os.getloadavg()}")
    sys.exit(0 if both["ok"].all() else 1)


if __name__ == "__main__":
    main()
