"""Do `make demo`'s decode ratios agree with `make bench`'s? `python -m orchestrator.ratio_check`: runs the
quickstart's infer jobs as the demo does (a temporary store; `--timing` as the suite says, or another), then
`python -m workloads.bench infer` in a fresh process at the jobs' thread count, and prints per family and
batch size both decode ÷ dense ratios (median over rounds, p10–p90), their difference and whether it is
within --tolerance (10%). Exit 1 if any is not, or the demo's was measured under contention.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator import api
from orchestrator.runs import scheduling
from orchestrator.runs.tracking import Tracker
from results import contention, load, names

TOLERANCE = 0.10
KEYS = ["family", "batch_size"]


def agreement(demo: pd.DataFrame, bench: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """demo (decode_ratios rows: family, batch_size, decode_vs_dense, contended) joined with bench (family,
    batch_size, bench_vs_dense): rel_diff = demo / bench − 1; ok: |rel_diff| ≤ tolerance and the demo's
    ratio measured alone. A demo row the bench lacks is kept, not ok; bench-only rows (its DeepSpeed MoE
    variant) are dropped."""
    both = demo.merge(bench, on=KEYS, how="left", suffixes=("", "_bench"))
    both["rel_diff"] = both["decode_vs_dense"] / both["bench_vs_dense"] - 1.0
    alone = ~both["contended"].astype("boolean").fillna(True).astype(bool)
    both["ok"] = both["rel_diff"].abs().le(tolerance + 1e-12).fillna(False).astype(bool) & alone
    return both.sort_values(KEYS, ignore_index=True)


def bench_ratios(rows: list[dict]) -> pd.DataFrame:
    """The benchmark JSON's decode rows ("decode bs<B> <family>", on the device) that carry a ratio to
    dense: family, batch_size, bench_vs_dense (median over rounds), bench_p10, bench_p90."""
    out = []
    for r in rows:
        parts = r["name"].split()
        if r["section"] != "infer" or len(parts) != 3 or parts[0] != "decode" or r.get("value") is None:
            continue
        out.append(
            {
                "family": parts[2],
                "batch_size": int(parts[1].removeprefix("bs")),
                "bench_vs_dense": r["value"],
                "bench_p10": r.get("value_p10"),
                "bench_p90": r.get("value_p90"),
            }
        )
    return pd.DataFrame(out, columns=[*KEYS, "bench_vs_dense", "bench_p10", "bench_p90"])


def demo_sweep(suite: str, timing: str | None, home: Path) -> tuple[pd.DataFrame, int]:
    """The suite's infer jobs, run as `isosparse run` runs them: their decode ratios and torch threads."""
    os.environ["ISOSPARSE_HOME"] = str(home)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    sets = ["matrix.jobs=[infer]", "matrix.seeds=[0]"] + ([f"timing.infer={timing}"] if timing else [])
    run = api.run_suite(suite, sets, tracking_uri=uri, make_report=False)
    if run.exit_code:
        raise SystemExit(f"the suite's infer jobs did not all finish: {run.counts()}")
    if len({j.labels["group"] for j in run.suite.jobs}) != 1:
        raise SystemExit(f"ratio_check compares one comparison group; {suite} has several")
    scheduling.shutdown()  # the benchmark gets the machine to itself
    runs = load.runs_from_mlflow(Tracker(uri).search(run.suite.experiment))
    threads = int(runs[names.TIMING_THREADS].dropna().max())
    ratios = contention.decode_ratios(runs)
    return ratios[[*KEYS, "decode_vs_dense", "p10", "p90", "source", "contended"]], threads


def bench_sweep(threads: int, home: Path) -> pd.DataFrame:
    """`python -m workloads.bench infer --threads T` in a fresh process: its decode ratios to dense."""
    out = home / "bench.json"
    cmd = [sys.executable, "-m", "workloads.bench", "infer", "--threads", str(threads), "--out", str(out)]
    subprocess.run(cmd, check=True)
    (record,) = json.loads(out.read_text())["runs"]
    return bench_ratios(record["rows"])


def _spread(p10: float, p90: float) -> str:
    return "-" if pd.isna(p10) or pd.isna(p90) else f"{p10:.3f}–{p90:.3f}"


def _why(r, tolerance: float) -> str:
    """Why a row is not ok: a side missing, the demo's ratio contended, or the difference too large."""
    if pd.isna(r.rel_diff):
        return "missing"
    return "contended" if r.contended else f">{tolerance:.0%}"


def render(both: pd.DataFrame, tolerance: float, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    cols = ("family", "batch", "demo", "demo p10–p90", "bench", "bench p10–p90", "diff", "measured", "ok")
    for col in cols:
        table.add_column(col, justify="left" if col in ("family", "measured", "ok") else "right")
    for r in both.itertuples():
        measured = "-" if pd.isna(r.contended) else ("contended" if r.contended else "alone")
        ok = "yes" if r.ok else f"NO ({_why(r, tolerance)})"
        table.add_row(
            r.family,
            str(r.batch_size),
            f"{r.decode_vs_dense:.3f}",
            _spread(r.p10, r.p90),
            f"{r.bench_vs_dense:.3f}",
            _spread(r.bench_p10, r.bench_p90),
            f"{r.rel_diff:+.1%}",
            measured,
            ok,
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.ratio_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("suite", nargs="?", default="quickstart")
    parser.add_argument(
        "--timing",
        choices=["interleaved", "exclusive", "shared"],
        default=None,
        help="the infer jobs' timing (default: the suite's)",
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 100))
    start, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="isosparse-ratio-check-") as tmp:
        demo, threads = demo_sweep(args.suite, args.timing, Path(tmp))
        demo_s = time.perf_counter() - start
        bench = bench_sweep(threads, Path(tmp))
    both = agreement(demo, bench, args.tolerance)
    title = (
        f"decode tokens/s ÷ dense: {args.suite}'s infer jobs (the demo's report) vs "
        f"`python -m workloads.bench infer --threads {threads}`"
    )
    console.print(render(both, args.tolerance, title))
    took = time.perf_counter() - start
    console.print(
        f"tolerance {args.tolerance:.0%}; torch threads {threads}; demo sweep {demo_s:.0f} s, "
        f"bench {took - demo_s:.0f} s, {took:.0f} s in all; load average (1, 5, 15 min) "
        f"before {load_before}, after {os.getloadavg()}",
        highlight=False,
    )
    sys.exit(0 if len(both) and both["ok"].all() else 1)


if __name__ == "__main__":
    main()
