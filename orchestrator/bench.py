"""Orchestration overhead: `python -m orchestrator.bench [--jobs 50] [--num-cpus N]`.
Details: docs/orchestrator.md#orchestratorbench.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import api
from orchestrator.runs import scheduling

SUITE = """
experiment: bench-{name}
resources:
  dummy: {{num_cpus: {cpus}}}
dummy: {{steps: 0}}
matrix:
  jobs: [dummy]
  presets: [debug]
  seeds: {seeds}
"""


def _suite(folder: Path, name: str, n_jobs: int, cpus: float) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, cpus=cpus, seeds=list(range(n_jobs))))
    return str(path)


def _compare_times(uri: str, rounds: int = 3) -> tuple[float, float, float]:
    """Medians of (api.compare in-process, `python -m orchestrator.cli compare` wall, `python -c pass`
    wall), interleaved round by round."""
    cli = [sys.executable, "-m", "orchestrator.cli", "compare", "bench-warm", "--tracking-uri", uri]
    times: list[tuple[float, float, float]] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        api.compare("bench-warm", uri)
        t1 = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        t2 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    return tuple(statistics.median(column) for column in zip(*times, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--num-cpus", type=int, default=None, help="local cluster CPUs (default: all)")
    parser.add_argument("--job-cpus", type=float, default=0.25, help="CPUs each dummy job asks for")
    parser.add_argument("--with-report", action="store_true", help="build the report inside each run")
    args = parser.parse_args()
    opts = {"make_report": args.with_report}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["ISOSPARSE_HOME"] = str(folder / "home")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        t0 = time.perf_counter()
        scheduling.start(num_cpus=args.num_cpus)
        ray_init_s = time.perf_counter() - t0
        cold = api.run_suite(_suite(folder, "cold", 1, args.job_cpus), tracking_uri=uri, **opts)
        cold_s = time.perf_counter() - t0
        api.run_suite(_suite(folder, "warmup", 4, args.job_cpus), tracking_uri=uri, **opts)
        t1 = time.perf_counter()
        warm_suite = _suite(folder, "warm", args.jobs, args.job_cpus)
        warm = api.run_suite(warm_suite, tracking_uri=uri, **opts)
        warm_s = time.perf_counter() - t1
        scheduling.shutdown()
        t2 = time.perf_counter()
        api.report(warm_suite, tracking_uri=uri)
        report_s = time.perf_counter() - t2
        compare_s, cli_s, python_s = _compare_times(uri)
    if cold.exit_code or warm.exit_code:
        raise SystemExit(f"bench jobs failed: {cold.counts()} {warm.counts()}")
    load = os.getloadavg()
    print(f"cold start (ray.init + store + 1 job): {cold_s:.2f} s  (ray.init {ray_init_s:.2f} s)")
    report = "with" if args.with_report else "without"
    per_job = warm_s / args.jobs
    print(f"warm: {args.jobs} zero-work jobs in {warm_s:.2f} s = {per_job:.3f} s per job ({report} report)")
    print(f"report of the {args.jobs}-job suite (tables + figures, logged to MLflow): {report_s:.2f} s")
    print(f"compare bench-warm ({args.jobs} jobs, by name, medians of 3): {compare_s:.2f} s in-process,")
    print(f"  {cli_s:.2f} s as a fresh `isosparse compare` process ({python_s:.2f} s of it `python -c pass`)")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
