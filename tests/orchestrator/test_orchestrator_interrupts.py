"""Ctrl-C at any moment of a suite: it ends within 10 s, closes every open run KILLED, exits 130, and a
second Ctrl-C forces the exit. Interrupts are real SIGINTs, in-process at many offsets (so some land
inside MLflow writes) and in a CLI subprocess as a user presses them."""

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
from orchestrator.runs import scheduling

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
SUITE = """
experiment: interrupted
resources:
  dummy: {num_cpus: 0.5}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants: [{name: a, dummy: {value: 1}}, {name: b, dummy: {value: 2}}, {name: c, dummy: {value: 3}}]
dummy: {steps: 60, sleep_s: 0.03}  # 1.8 s a job: every offset (<= 1.5 s) lands while the suite runs
"""


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


def test_twenty_interrupts_at_spread_offsets_leave_no_open_run_and_no_duplicate(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    suite = tmp_path / "interrupted.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    previous = signal.signal(signal.SIGINT, lambda *_: None)  # a late timer must not hit the test itself
    interrupted = 0
    try:
        for i in range(20):
            experiment = f"interrupted-{i // 5}"  # 4 experiments, each resumed 5 times
            offset_s = 0.05 + 0.3 * (i % 5) + 0.07 * (i // 5)
            timer = threading.Timer(offset_s, os.kill, (os.getpid(), signal.SIGINT))
            started = time.monotonic()
            timer.start()
            try:
                report = api.run_suite(str(suite), [f"experiment={experiment}"], tracking_uri=store)
            except KeyboardInterrupt:  # before the parent run was opened: nothing to close
                report = None
            ended = time.monotonic()
            timer.cancel()
            if report is None:
                interrupted += 1
                assert ended - started - offset_s < 10.0
            elif report.cancelled:
                interrupted += 1
                assert ended - started - offset_s < 10.0
                assert report.exit_code == 130
                parent = mlflow.get_run(report.parent_run_id)
                assert parent.info.status == "KILLED"
            assert_consistent(experiment)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted >= 10  # most offsets land while the suite runs


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


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_the_cli_exits_130_fast(tmp_path, presses):
    suite = tmp_path / "slow.yaml"
    suite.write_text(textwrap.dedent(SUITE).replace("steps: 15", "steps: 400"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(suite, store, tmp_path / "home")
    try:
        wait_for_line(proc, ": running")
        time.sleep(0.5)
        pressed = time.monotonic()
        for _ in range(presses):  # 50 ms apart: within the first cancel (which takes ~0.3-2 s), and not
            proc.send_signal(signal.SIGINT)  # so close that the kernel merges the two signals into one
            time.sleep(0.05)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert time.monotonic() - pressed < 10.0
    assert "Traceback" not in rest and "database is locked" not in rest
    if presses == 1:
        mlflow.set_tracking_uri(store)
        runs = all_runs("interrupted")
        assert set(runs["status"]) == {"KILLED"}, runs[["tags.mlflow.runName", "status"]]
        assert "interrupted: cancelling" in rest
    else:
        assert "interrupted again: exiting now" in rest
