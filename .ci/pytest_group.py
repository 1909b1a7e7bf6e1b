"""pytest over `make test`'s selection in its own process group, the whole group killed on a timeout or
Ctrl-C: the one runner of .ci/mutations.py and .ci/stress.py."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SELECTION = "not gpu and not slow"  # make test's markers


def run_pytest(targets: list[str], log: Path, timeout_s: float, *flags: str) -> tuple[int | None, str, float]:
    """(exit code, None when it ran past timeout_s; pytest's output, also written to log; seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-q", *flags, "-m", SELECTION, "-p", "no:cacheprovider", "-rfE"]
    # PYTHONFAULTHANDLER as in `make test`: a crash at interpreter exit, after pytest's handler is gone,
    # still prints every thread's stack into the log.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, *targets], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException:  # a timeout or Ctrl-C: pytest and every process it started go, those in
            # sessions of their own (a test's CLI run and its Ray cluster) included, found before pytest dies
            descendants = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            for child in descendants:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.wait()
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
            rc = None
    return rc, log.read_text(), time.monotonic() - started
