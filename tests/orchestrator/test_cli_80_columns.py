"""Every table fits an 80-column terminal (a pseudo-terminal of 80 columns, as a user's) with no cell cut
to "…": validate, status, plan (a suite and a preset), clusters show, list, the presets table; piped, the
same commands print whole cells and no ANSI codes. And names round-trip: the suite name `status` prints
is what `status NAME` and `compare NAME` accept, also when the suite file is not at hand."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
# A live display redraws by moving the cursor up and erasing lines: each move or erase (or a bare carriage
# return) starts a new screen line, so one frame's last line is not read as joined to the next frame's.
REDRAW = re.compile(r"\x1b\[[0-9;?]*[ABEFHJKf]|\r(?!\n)")
CLI = [sys.executable, "-m", "orchestrator.cli"]
# Long names on purpose: 4 families × 2 presets × a long variant × 2 seeds of model-free jobs.
WIDE_SUITE = """
experiment: an-experiment-with-a-rather-long-name
matrix:
  jobs: [dummy]
  families: [dense, l3, moe, scone]
  presets: [debug, paper-800m]
  seeds: [0, 1]
  variants: [{name: a-long-variant-name}]
dummy: {steps: 1}
"""
MINI = """
experiment: round-trip-experiment
matrix: {jobs: [dummy], families: [dense, l3]}
dummy: {steps: 1, value: 3}
"""


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COLUMNS", "LINES"))}
    return {**out, "PYTHONPATH": str(REPO), "ISOSPARSE_HOME": str(tmp_path / "iso"), "OMP_NUM_THREADS": "1",
            **extra}  # fmt: skip


def in_a_terminal(cmd: list[str], environ: dict[str, str], cwd: Path, cols: int = 80) -> tuple[int, str]:
    """Run `cmd` on a pseudo-terminal of `cols` columns; (exit code, output without ANSI codes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env={**environ, "TERM": "xterm"},
                            cwd=cwd, close_fds=True)  # fmt: skip
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    screen = REDRAW.sub("\n", out.decode(errors="replace")).replace("\r", "")
    return proc.wait(timeout=60), ANSI.sub("", screen)


def check_fits(cmd, environ, cwd, expect_rc=0) -> str:
    rc, text = in_a_terminal(cmd, environ, cwd)
    assert rc == expect_rc, text
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in text, text
    piped = subprocess.run(cmd, env=environ, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert piped.returncode == expect_rc, piped.stdout + piped.stderr
    assert "…" not in piped.stdout and "\x1b[" not in piped.stdout, piped.stdout
    return text


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A store with one run of a small suite (file mini.yaml, experiment round-trip-experiment)."""
    tmp = tmp_path_factory.mktemp("recorded")
    (tmp / "mini.yaml").write_text(textwrap.dedent(MINI))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    rc, text = in_a_terminal([*CLI, "run", "mini.yaml", "--tracking-uri", store], env(tmp), tmp)
    assert rc == 0, text
    (tmp / "elsewhere").mkdir()
    return tmp, store, text


def test_run_fits_80_columns(recorded):
    """`run`'s own output in a terminal: the start line, the live table, the comparison, the verdict,
    the report line and the counts."""
    text = recorded[2]
    assert "comparison" in text and "1 finished" not in text and "2 finished" in text
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "wide.yaml"],
        ["plan", "suites/iso-sparse-800m.yaml", "--cluster", "clusters/examples/h100x8.yaml"],
        ["plan", "--preset", "paper-2.6b", "--family", "l3", "--cluster", "clusters/examples/h100x8.yaml"],
        ["clusters", "show", "clusters/examples/h100x8.yaml"],
        ["list"],
    ],
    ids=["validate", "plan-suite", "plan-preset", "clusters-show", "list"],
)
def test_each_command_fits_80_columns(tmp_path, args):
    (tmp_path / "wide.yaml").write_text(textwrap.dedent(WIDE_SUITE))
    shipped = ("suites/", "clusters/")
    args = [
        str(tmp_path / a) if a == "wide.yaml" else str(REPO / a) if a.startswith(shipped) else a for a in args
    ]
    check_fits([*CLI, *args], env(tmp_path), tmp_path)


def test_the_presets_table_fits_80_columns_and_wide_shows_every_column(tmp_path):
    text = check_fits([sys.executable, "-m", "workloads.models.presets"], env(tmp_path), tmp_path)
    assert "paper-800m" in text and "active" in text
    rc, wide = in_a_terminal(
        [sys.executable, "-m", "workloads.models.presets", "--wide"], env(tmp_path), tmp_path
    )
    assert rc == 0 and "paper Table 1 (err)" in wide


def test_status_fits_80_columns_and_its_names_round_trip(recorded):
    tmp, store, _ = recorded
    cwd = tmp / "elsewhere"  # mini.yaml is not here: the name must come from the store
    text = check_fits([*CLI, "status", "--tracking-uri", store], env(tmp), cwd)
    assert " mini " in text  # the suite's name as status prints it
    named = check_fits([*CLI, "status", "mini", "--tracking-uri", store], env(tmp), cwd)
    assert "dummy/l3/debug/base/s0" in named
    compared = check_fits([*CLI, "compare", "mini", "--tracking-uri", store], env(tmp), cwd)
    assert "dummy l3 debug" in compared


def test_a_long_error_wraps_in_a_terminal_and_stays_one_line_piped(tmp_path):
    long = tmp_path / ("a-corpus-folder-with-a-name-long-enough-to-need-wrapping" * 2)
    long.mkdir()
    (long / "empty.txt").write_text("")
    source = f"{{kind: text, paths: [{long / 'empty.txt'}]}}"
    (tmp_path / "s.yaml").write_text(
        f"matrix: {{jobs: [train], presets: [debug]}}\ntrain: {{data: {{source: {source}}}}}\n"
    )
    cmd = [*CLI, "validate", str(tmp_path / "s.yaml")]
    text = check_fits(cmd, env(tmp_path), tmp_path, expect_rc=2)
    assert "has no text" in text
    piped = subprocess.run(cmd, env=env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert f"{long / 'empty.txt'} has no text" in piped.stdout  # whole, for grep
