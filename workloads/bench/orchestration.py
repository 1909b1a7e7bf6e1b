"""Section `orchestration`: the orchestrator's per-job overhead and cold start. workloads never imports
orchestrator (DESIGN.md), so the measurement runs out of process: `python -m orchestrator.runs.overhead
JOBS`, whose last stdout line is its JSON. One sample per number (a Ray cluster start each run).
Details: docs/workloads.md#workloadsbenchorchestration."""

import json
import subprocess
import sys

from workloads.bench.rows import REPORTED, BenchContext, Row, timed_row

COMPARE_GOAL_S = 1.5  # issue 24: compare prints in <= 1.5 s plus interpreter start
LATENCY = "a latency ({}); no byte or FLOP count bounds it"


def rows(ctx: BenchContext) -> list[Row]:
    n_jobs = 5 if ctx.quick else 20
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.runs.overhead", str(n_jobs)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"orchestration: overhead measurement failed:\n{done.stderr[-2000:]}")
    return rows_from(json.loads(done.stdout.strip().splitlines()[-1]), n_jobs)


def rows_from(m: dict[str, float], n_jobs: int) -> list[Row]:
    """The section's rows from `orchestrator.runs.overhead`'s JSON `m` (seconds)."""
    o, cli_over = "orchestration", m["compare_cli_s"] - m["python_s"]

    def row(name: str, seconds: float, what: str, **kw) -> Row:
        return timed_row(o, name, [seconds], no_floor=LATENCY.format(what), **kw)

    return [
        row(
            "cold start (1 job)",
            m["cold_s"],
            "Ray cluster start, store, first worker",
            note=f"ray.init {m['ray_init_s']:.1f} s of it",
        ).without_goal(REPORTED),
        row(
            f"per job ({n_jobs} warm)",
            m["per_job_s"],
            "Ray dispatch, MLflow run and files",
            items=1.0,
            unit="job",
        ).without_goal(REPORTED),
        row(f"report ({n_jobs} jobs)", m["report_s"], "MLflow reads, rendering").without_goal(REPORTED),
        row("compare in-process", m["compare_s"], "store reads (sqlite3), rendering").with_goal(
            f"≤{COMPARE_GOAL_S:g} s", m["compare_s"] <= COMPARE_GOAL_S, m["compare_s"]
        ),
        row(
            "compare CLI process",
            m["compare_cli_s"],
            "interpreter start, imports, store reads",
            note=f"python -c pass {m['python_s']:.2f} s of it; CPU {m['compare_cli_cpu_s']:.2f} s (user+sys)",
        ).with_goal(f"≤{COMPARE_GOAL_S:g} s + python start", cli_over <= COMPARE_GOAL_S, cli_over),
    ]
