"""Ctrl-C in each phase of a real `isosparse run` process, at hooks (tests/orchestrator/cli_hooked.py), not
at wall-clock moments: while Ray's local cluster starts and while the store is created (the main thread
deaf to signals, as inside a C call), after every run closed, and a second press while the first waits for
jobs that ignore the cancel. Each ends 130 with no run RUNNING and no process of the run left behind.
HANG_S only turns a hang into a failure; it holds however loaded the machine is."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
HOOKED = Path(__file__).with_name("cli_hooked.py")
HANG_S = 120
SUITE = """
experiment: phases
resources:
  dummy: {num_cpus: 0.5}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants:
    - {name: a, dummy: {value: 1}}
dummy: {steps: 1}
"""
STUCK = SUITE.replace("{value: 1}", "{value: 1, steps: 100000, sleep_s: 0.03, ignore_cancel: true}")


class Run:
    def __init__(self, tmp: Path, hook: str, suite: str = SUITE):
        (tmp / "suite.yaml").write_text(textwrap.dedent(suite))
        self.db, self.marker = tmp / "store" / "mlflow.db", tmp / "hook-reached"
        self.db.parent.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PYTHONPATH=str(REPO), ISOSPARSE_HOME=str(tmp / "home"), HOOK_MARKER=str(self.marker))
        env.update(RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
        cmd = [sys.executable, str(HOOKED), hook, "run", str(tmp / "suite.yaml"), "--tracking-uri",
               f"sqlite:///{self.db}"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)  # fmt: skip

    def wait_for(self, reached) -> None:
        deadline = time.monotonic() + 600
        while not reached():
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, "the hook was never reached"
            time.sleep(0.05)

    def press(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        return self.end()

    def end(self) -> str:
        try:
            out, _ = self.proc.communicate(timeout=HANG_S)
        finally:
            self.proc.kill()
        return out

    def left(self, grace_s: float = 60) -> list[str]:
        """Processes of the run's session (its own local Ray cluster) still alive `grace_s` after it
        exited, killed here by pid. Ray's workers exit on their own once their raylet is gone, which on a
        loaded box takes seconds: the grace only bounds that wait, a process that stays is reported."""
        deadline = time.monotonic() + grace_s
        while self._session() and time.monotonic() < deadline:
            time.sleep(0.2)
        found = []
        for p in self._session():
            try:
                found.append(p.info["name"])
                p.kill()
            except psutil.Error:
                continue
        return found

    def _session(self) -> list[psutil.Process]:
        alive = []
        for p in psutil.process_iter(["name"]):
            try:
                mine = p.pid != self.proc.pid and os.getsid(p.pid) == self.proc.pid
                if mine and p.status() != psutil.STATUS_ZOMBIE:  # killed, not yet reaped: gone
                    alive.append(p)
            except (OSError, psutil.Error):
                continue
        return alive

    def statuses(self) -> list[str]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as con:
            return [row[0] for row in con.execute("select status from runs")]


def ray_processes_up(pid: int) -> bool:
    names = {c.name() for c in psutil.Process(pid).children(recursive=True)}
    return {"gcs_server", "raylet"} <= names


def test_ctrl_c_while_ray_starts_exits_at_once_leaving_no_ray_process(tmp_path):
    run = Run(tmp_path, "ray-start-masked")
    run.wait_for(lambda: run.marker.exists() and ray_processes_up(run.proc.pid))
    out = run.press()
    assert run.proc.returncode == 130, out
    assert "interrupted: nothing was recorded" in out and "Traceback" not in out
    assert run.statuses() == []  # nothing was recorded
    assert run.left() == []  # gcs_server, raylet, agents and workers were killed with the driver


def test_ctrl_c_while_the_store_is_created_leaves_no_half_made_store(tmp_path):
    run = Run(tmp_path, "store-masked")
    run.wait_for(run.marker.exists)
    out = run.press()
    assert run.proc.returncode == 130, out
    assert "interrupted: nothing was recorded" in out
    assert not run.db.exists()  # the store appears complete or not at all
    leftover = list(run.db.parent.glob(".mlflow.db.*.creating"))
    assert len(leftover) == 1  # what the killed process was building
    from orchestrator.runs.tracking import Tracker

    Tracker(f"sqlite:///{run.db}").check()  # a later run makes the store, and removes the dead one's file
    assert run.db.exists() and not any(run.db.parent.glob(".mlflow.db.*.creating"))


def test_ctrl_c_after_every_run_closed_exits_at_once(tmp_path):
    run = Run(tmp_path, "printing")
    run.wait_for(run.marker.exists)
    out = run.press()
    assert run.proc.returncode == 130, out
    assert "interrupted: every run was already closed" in out
    assert sorted(run.statuses()) == ["FINISHED", "FINISHED"]  # the job's run and the parent run
    assert run.left() == []


def test_a_second_ctrl_c_stops_waiting_for_jobs_and_still_closes_every_run(tmp_path):
    run = Run(tmp_path, "long-grace", STUCK)  # the first press alone would wait an hour for the job
    run.wait_for(lambda: "RUNNING" in run.statuses() and len(run.statuses()) == 2)
    run.proc.send_signal(signal.SIGINT)
    lines = []
    while "interrupted: cancelling" not in "".join(lines):
        line = run.proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    out = "".join(lines) + run.press()
    assert run.proc.returncode == 130, out
    assert "interrupted again: not waiting for jobs" in out and "Traceback" not in out
    assert run.statuses() == ["KILLED", "KILLED"]
    assert run.left() == []
