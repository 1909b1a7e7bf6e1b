"""Ctrl-C at any moment of a suite: it ends, closes every open run KILLED, exits 130, and a second Ctrl-C
stops waiting for jobs (test_orchestrator_interrupt_phases.py). Interrupts are real SIGINTs, in-process
at many offsets (so some land inside MLflow writes) and in a CLI subprocess as a user presses them.
Deterministic on a loaded machine: the jobs never end by themselves and offsets count from the handler's
installation."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mlflow
import pytest

from orchestrator import api
from orchestrator.runs import interrupts, scheduling

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
SUITE = """
experiment: interrupted
resources:
  dummy: {num_cpus: 0.5}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants:
    - {name: a, dummy: {value: 1, steps: 1}}
    - {name: b, dummy: {value: 2}}
    - {name: c, dummy: {value: 3}}
dummy: {steps: 100000, sleep_s: 0.03}  # 50 min: b and c are running whenever a Ctrl-C comes; a may finish
"""
FOREVER = SUITE.replace("steps: 1}", "steps: 100000}")  # no job ends before the Ctrl-C
HANG_S = api.CANCEL_GRACE_S + 60  # the jobs last 50 min: returning at all shows the cancel; this bound
# only turns a hang into a failure and holds however loaded the machine is


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    scheduling.start(num_cpus=2)
    yield
    scheduling.shutdown()


def all_runs(experiment: str):
    if mlflow.get_experiment_by_name(experiment) is None:
        return mlflow.search_runs(experiment_names=[])
    return mlflow.search_runs(experiment_names=[experiment])


def assert_consistent(experiment: str) -> None:
    runs = all_runs(experiment)
    if runs.empty:  # interrupted before anything was recorded
        return
    assert "RUNNING" not in set(runs["status"]), runs[["tags.mlflow.runName", "status"]]
    finished = runs[(runs["status"] == "FINISHED") & (runs["tags.isosparse.kind"] == "job")]
    assert finished.empty or finished["tags.isosparse.fingerprint"].is_unique


def interrupt_after(offset_s: float, stop: threading.Event) -> threading.Thread:
    """SIGINT to this process offset_s after run_suite installed its handler (so no press is lost to the
    test's own handler, however late the main thread gets there); nothing once `stop` is set."""

    def fire():
        while not interrupts._state.installed:
            if stop.wait(0.001):
                return
        if not stop.wait(offset_s):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def test_twenty_interrupts_at_spread_offsets_leave_no_open_run_and_no_duplicate(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    suite = tmp_path / "interrupted.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    previous = signal.signal(signal.SIGINT, lambda *_: None)  # a late signal must not hit the test itself
    try:
        for i in range(20):
            experiment = f"interrupted-{i // 5}"  # 4 experiments, each resumed 5 times
            offset_s = 0.3 * (i % 5) + 0.07 * (i // 5)  # from loading the suite to jobs running
            stop = threading.Event()
            thread = interrupt_after(offset_s, stop)
            started = time.monotonic()
            try:
                report = api.run_suite(str(suite), [f"experiment={experiment}"], tracking_uri=store)
            except KeyboardInterrupt:  # before the parent run was opened: nothing to close
                report = None
            stop.set()
            thread.join()
            assert time.monotonic() - started < HANG_S
            if report is not None:  # b and c never finish: the suite returns only because it was cancelled
                assert report.cancelled and report.exit_code == 130
                assert mlflow.get_run(report.parent_run_id).info.status == "KILLED"
            assert_consistent(experiment)
    finally:
        signal.signal(signal.SIGINT, previous)


def cli(suite: Path, store: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ISOSPARSE_HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--tracking-uri", store]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never printed: {''.join(lines)}")


def test_ctrl_c_in_the_cli_exits_130_and_closes_every_run_killed(tmp_path):
    suite = tmp_path / "forever.yaml"
    suite.write_text(textwrap.dedent(FOREVER))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(suite, store, tmp_path / "home")
    try:
        wait_for_line(proc, ": running")
        pressed = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert time.monotonic() - pressed < HANG_S
    assert "Traceback" not in rest and "database is locked" not in rest
    assert "interrupted: cancelling" in rest
    mlflow.set_tracking_uri(store)
    runs = all_runs("interrupted")
    assert set(runs["status"]) == {"KILLED"}, runs[["tags.mlflow.runName", "status"]]
