"""The timing-dependent tests (interrupts, progress, cluster connects, scheduling) N times in a row while
CPU burners share the cores, as a loaded CI box would: prints each run's result, time and load, then the
pass count. The burners are killed however this ends (Ctrl-C, SIGTERM, a failing run).

    python .ci/stress.py                       # 20 runs, 2 burners, the default selection
    python .ci/stress.py --runs 3 tests/orchestrator/test_orchestrator_interrupts.py
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from pytest_group import ROOT, run_pytest

O = "tests/orchestrator/"
TESTS = (  # every test whose outcome could depend on how fast the machine is
    O + "test_orchestrator_interrupts.py",  # Ctrl-C at spread offsets, in-process and in a CLI
    O + "test_orchestrator_interrupt_phases.py",  # Ctrl-C while Ray starts, the store is made, after
    O + "test_orchestrator_run.py",  # suites end to end on a local Ray cluster, retries, the live UI
    O + "test_orchestrator_scheduling.py",  # dependent jobs, cancels, OOM retries
    O + "test_orchestrator_timing_ray.py",  # exclusive timed phases never overlap
    O + "test_orchestrator_render.py",  # progress lines by the job's clock, piped output
    O + "test_orchestrator_cluster.py",  # a token-auth `ray start --head`, a wrong token
    O + "test_orchestrator_ray_link.py",  # auth probes against fake servers
    O + "test_store_path.py",  # unusable stores refused before MLflow's retries
    "tests/workloads/jobs/test_jobs_timing.py",  # step timers, the dummy job's cancels
)
BURN = "while True: pass"


def burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the burner (or pytest) and its children
        proc.wait()


def run_once(tests: list[str], log: Path, timeout_s: float) -> tuple[str, str, float]:
    """(result, pytest's summary line, seconds) of one run of the selection."""
    rc, text, seconds = run_pytest(tests, log, timeout_s)
    summary = re.findall(r"^=* ?(\d+ (?:passed|failed|error).*?) ?=*$", text, flags=re.MULTILINE)
    result = "green" if rc == 0 else "HUNG" if rc is None else f"RED rc={rc}"
    return result, summary[-1] if summary else "", seconds


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM / SIGHUP unwind like Ctrl-C, through the burners' kill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=list(TESTS), help="test files or node ids")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burners", type=int, default=2, help="CPU-burning processes alongside")
    parser.add_argument("--timeout-s", type=float, default=1800, help="a run longer than this is HUNG")
    parser.add_argument("--logs", type=Path, default=ROOT / ".isosparse" / "stress")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    print(f"{args.runs} runs of {len(args.tests)} test files, {args.burners} burners, {os.cpu_count()} cores")
    results, burning = [], burners(args.burners)
    try:
        for i in range(1, args.runs + 1):
            log = args.logs / f"run-{i:02d}.log"
            result, summary, seconds = run_once(args.tests, log, args.timeout_s)
            load = os.getloadavg()[0]
            results.append((result, seconds, load))
            where = "" if result == "green" else f"  log: {log}"
            print(f"run {i:2d}/{args.runs}: {result:10} {seconds:6.0f} s  load {load:5.1f}  {summary}{where}",
                  flush=True)  # fmt: skip
    except KeyboardInterrupt:
        print(f"interrupted after {len(results)} runs")
    finally:
        stop(burning)
    if not results:
        return 130
    green = sum(r == "green" for r, _, _ in results)
    seconds = [s for _, s, _ in results]
    loads = [x for _, _, x in results]
    print(f"\n{green}/{len(results)} green; run time median {statistics.median(seconds):.0f} s "
          f"(min {min(seconds):.0f}, max {max(seconds):.0f}); "
          f"1-min load {min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
    return 0 if green == len(results) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
