"""Section `orchestration`: the orchestrator's per-job overhead and cold start. workloads never imports
orchestrator (DESIGN.md), so the measurement runs out of process: `python -m orchestrator.runs.overhead
JOBS`, whose last stdout line is its JSON. One sample per number (a Ray cluster start each run)."""

import json
import subprocess
import sys

from workloads.bench.rows import BenchContext, Row, timed_row


def rows(ctx: BenchContext) -> list[Row]:
    n_jobs = 5 if ctx.quick else 20
    done = subprocess.run([sys.executable, "-m", "orchestrator.runs.overhead", str(n_jobs)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"orchestration: overhead measurement failed:\n{done.stderr[-2000:]}")
    m = json.loads(done.stdout.strip().splitlines()[-1])
    o = "orchestration"
    return [
        timed_row(o, "cold start (1 job)", [m["cold_s"]], note=f"ray.init {m['ray_init_s']:.1f} s of it"),
        timed_row(o, f"per job ({n_jobs} warm)", [m["per_job_s"]], items=1.0, unit="job"),
        timed_row(o, f"report ({n_jobs} jobs)", [m["report_s"]]),
        timed_row(o, "compare in-process", [m["compare_s"]]),
        timed_row(
            o, "compare CLI process", [m["compare_cli_s"]], note=f"python -c pass {m['python_s']:.2f} s of it"
        ),
    ]
