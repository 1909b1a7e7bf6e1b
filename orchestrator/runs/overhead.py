"""Orchestration overhead, measured for `python -m workloads.bench orchestration` (which runs this module in
a subprocess, `python -m orchestrator.runs.overhead JOBS`, and reads the JSON line it prints: workloads
never imports orchestrator).
Details: docs/orchestrator.md#orchestratorrunsoverhead."""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
experiment: bench-{name}
resources:
  dummy: {{num_cpus: 0.25}}
dummy: {{steps: 0}}
matrix:
  jobs: [dummy]
  presets: [debug]
  seeds: {seeds}
"""


def _suite(folder: Path, name: str, n_jobs: int) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, seeds=list(range(n_jobs))))
    return str(path)


def _compare_times(uri: str, rounds: int = 3) -> tuple[float, float, float, float]:
    """Medians of (api.compare in-process, `python -m orchestrator.cli compare` wall, `python -c pass`
    wall, the compare process's CPU seconds), interleaved round by round. The CPU time (user + sys, from
    the child's rusage) is what a loaded machine inflates least: near the wall time it would take alone."""
    from orchestrator import api

    cli = [sys.executable, "-m", "orchestrator.cli", "compare", "bench-warm", "--tracking-uri", uri]
    times: list[tuple[float, float, float, float]] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        api.compare("bench-warm", uri)
        t1, cpu0 = time.perf_counter(), _children_cpu_s()
        subprocess.run(cli, check=True, capture_output=True)
        t2, cpu = time.perf_counter(), _children_cpu_s() - cpu0
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((t1 - t0, t2 - t1, time.perf_counter() - t2, cpu))
    return tuple(statistics.median(column) for column in zip(*times, strict=True))


def _children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def measure(n_jobs: int) -> dict[str, float]:
    """{"ray_init_s", "cold_s", "warm_s", "per_job_s", "report_s", "compare_s", "compare_cli_s",
    "compare_cli_cpu_s", "python_s", "jobs"} (seconds; see the module doc)."""
    from orchestrator import api
    from orchestrator.runs import scheduling

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["ISOSPARSE_HOME"] = str(folder / "home")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        t0 = time.perf_counter()
        scheduling.start()
        ray_init_s = time.perf_counter() - t0
        cold = api.run_suite(_suite(folder, "cold", 1), tracking_uri=uri, make_report=False)
        cold_s = time.perf_counter() - t0
        api.run_suite(_suite(folder, "warmup", 2), tracking_uri=uri, make_report=False)
        t1 = time.perf_counter()
        warm_suite = _suite(folder, "warm", n_jobs)
        warm = api.run_suite(warm_suite, tracking_uri=uri, make_report=False)
        warm_s = time.perf_counter() - t1
        scheduling.shutdown()
        t2 = time.perf_counter()
        api.report(warm_suite, tracking_uri=uri)
        report_s = time.perf_counter() - t2
        compare_s, cli_s, python_s, cli_cpu_s = _compare_times(uri)
    if cold.exit_code or warm.exit_code:
        raise SystemExit(f"overhead jobs failed: {cold.counts()} {warm.counts()}")
    return {
        "ray_init_s": ray_init_s,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "per_job_s": warm_s / n_jobs,
        "report_s": report_s,
        "compare_s": compare_s,
        "compare_cli_s": cli_s,
        "compare_cli_cpu_s": cli_cpu_s,
        "python_s": python_s,
        "jobs": n_jobs,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        raise SystemExit("usage: python -m orchestrator.runs.overhead JOBS (a positive count)")
    print(json.dumps(measure(int(sys.argv[1]))))
