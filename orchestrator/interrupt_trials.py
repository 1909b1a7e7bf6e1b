"""Ctrl-C trials: `python -m orchestrator.interrupt_trials [--trials 20]` runs a small real suite with
`isosparse run` once to the end (its length D), then N times with a SIGINT at a random moment in [0, D]
(start-up included; every fourth trial presses twice), each in a fresh ISOSPARSE_HOME and store, and prints
per trial the exit code, seconds from the SIGINT to the exit, runs left RUNNING and processes left over.
Exit 0 when every trial exits 130 within 3 s with no RUNNING run and no process left.
"""

import argparse
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BOUND_S = 3.0
SUITE = """\
experiment: ctrl-c-trials
description: A small suite for the Ctrl-C trials (one short train job on the debug preset).
timing: {train: shared}
resources:
  train: {num_cpus: 1, memory_gb: 2}
train:
  data:
    source: {kind: builtin, content: docs}
  seq_len: 32
  batch_size: 2
  steps: 30
  log_every: 5
matrix:
  families: [dense]
  presets: [debug]
  jobs: [train]
  seeds: [0]
"""


class Trial:
    """One `isosparse run` in its own session, its output lines timestamped."""

    def __init__(self, folder: Path, suite: Path):
        folder.mkdir(parents=True)
        self.db = folder / "mlflow.db"
        env = {**os.environ, "ISOSPARSE_HOME": str(folder / "home"), "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            str(suite),
            "--tracking-uri",
            f"sqlite:///{self.db}",
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own session: what is left of it afterwards can be found and killed
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def last_line(self, before: float) -> str:
        seen = [text for t, text in self.lines if t <= before and text.strip()]
        return seen[-1] if seen else "(no output yet)"

    def leftovers(self) -> list[psutil.Process]:
        """Processes still in the trial's session (its local Ray cluster, if anything survived)."""
        out = []
        for p in psutil.process_iter():
            try:
                alive = p.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped
                if p.pid != self.proc.pid and os.getsid(p.pid) == self.proc.pid and alive:
                    out.append(p)
            except (OSError, psutil.Error):
                continue
        return out

    def running_runs(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(self.db) as con:
            try:
                return con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
            except sqlite3.OperationalError:  # no runs table: nothing was recorded
                return 0


def code_of(returncode: int) -> int:
    """The exit code as a shell reports it (128 + N for a process ended by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_trial(folder: Path, suite: Path, at_s: float | None, presses: int) -> dict:
    trial = Trial(folder, suite)
    pressed = None
    if at_s is not None:
        try:
            trial.proc.wait(timeout=at_s)
        except subprocess.TimeoutExpired:
            pressed = time.monotonic()
            for i in range(presses):
                if i:
                    time.sleep(0.5)
                trial.proc.send_signal(signal.SIGINT)
    try:
        trial.proc.wait(timeout=None if pressed is None else 120)
    except subprocess.TimeoutExpired:
        trial.proc.kill()
        trial.proc.wait()
    ended = time.monotonic()
    trial.reader.join(timeout=5)
    left = trial.leftovers()
    for p in left:  # only this trial's own processes, by pid
        with contextlib.suppress(psutil.Error):
            p.kill()
    return {
        "code": code_of(trial.proc.returncode),
        "wall_s": ended - trial.started,
        "exit_s": None if pressed is None else ended - pressed,
        "where": trial.last_line(pressed or ended),
        "running": trial.running_runs(),
        "left": len(left),
        "output": "\n".join(text for _, text in trial.lines),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="for the random moments (default: random)")
    parser.add_argument("--length-s", type=float, default=None, help="D, instead of a full first run")
    parser.add_argument("--keep", action="store_true", help="keep the trial folders")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="isosparse-ctrl-c-"))
    suite = root / "ctrl-c-trials.yaml"
    suite.write_text(SUITE)
    print(f"seed {seed}; load {os.getloadavg()[0]:.1f}; folders under {root}", flush=True)
    length = args.length_s
    if length is None:
        full = run_trial(root / "full", suite, None, 0)
        print(f"full run: exit {full['code']} in {full['wall_s']:.1f} s", flush=True)
        if full["code"] != 0:
            print(full["output"])
            return 1
        length = full["wall_s"]
    print(
        f"{'#':>2} {'SIGINT at':>9} {'presses':>7} {'exit':>4} {'to exit':>8} {'RUNNING':>7} {'left':>4}"
        "  last line"
    )
    good, i, tries = 0, 0, 0
    while i < args.trials:
        at_s, presses = rng.uniform(0, length), 2 if i % 4 == 3 else 1
        tries += 1
        r = run_trial(root / f"t{tries:02d}", suite, at_s, presses)
        if r["exit_s"] is None:  # the run ended before the moment came: not a trial, draw again
            print(f"   {at_s:>8.1f}s: the run had ended (exit {r['code']}, {r['wall_s']:.1f} s); drawn again")
            continue
        ok = r["code"] == 130 and r["exit_s"] is not None and r["exit_s"] <= BOUND_S
        ok = ok and r["running"] == 0 and r["left"] == 0
        good += ok
        exit_s = "-" if r["exit_s"] is None else f"{r['exit_s']:.2f}s"
        cells = f"{i:>2} {at_s:>8.1f}s {presses:>7} {r['code']:>4} {exit_s:>8}"
        cells += f" {r['running']:>7} {r['left']:>4}"
        print(f"{cells}  {r['where'][:60]}{'' if ok else '  <- FAILED'}", flush=True)
        if not ok:
            print("   its output:\n   " + r["output"].replace("\n", "\n   "), flush=True)
        i += 1
    print(
        f"{good}/{args.trials} trials exited 130 within {BOUND_S:.0f} s, no run RUNNING, no process left"
        f" (load {os.getloadavg()[0]:.1f})"
    )
    if not args.keep:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return 0 if good == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
