import os
import signal
import subprocess
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.main import app

REPO = Path(__file__).resolve().parents[2]


def test_version_command_prints_distribution_version():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == version("isosparse")


def test_run_on_a_cluster_too_small_is_refused_before_anything_is_submitted(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    cluster = tmp_path / "tiny.yaml"
    cluster.write_text("name: tiny\nkind: local\naccelerator: cpu\ncpus: 2\nmemory_gib: 0.01\n")
    store = tmp_path / "mlflow.db"
    args = ["run", "quickstart", "--cluster", str(cluster), "--tracking-uri", f"sqlite:///{store}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "train/dense/tiny/base/s0: does not fit on tiny" in result.output
    assert "--force" in result.output
    assert not store.exists()  # the store was never opened: nothing submitted, no run


def test_run_detach_on_a_cluster_expands_the_suite_once_and_refuses_before_detaching(tmp_path, monkeypatch):
    """`run --detach --cluster`: sized on the cluster before anything detaches (too small: exit 2, no
    process); when it fits, the suite is expanded once here and the child gets the same cluster file."""
    from orchestrator import api

    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    loads, started = [], []
    real_load = api.load_suite
    monkeypatch.setattr(api, "load_suite", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    child = types.SimpleNamespace(pid=7)
    fake = types.SimpleNamespace(
        Popen=lambda cmd, **_: started.append(cmd) or child, STDOUT=subprocess.STDOUT
    )
    monkeypatch.setattr(api, "subprocess", fake)  # api's own name: the real module stays for everyone else
    store = tmp_path / "mlflow.db"
    for memory, code in (("0.01", 2), ("64", 0)):
        loads.clear()
        cluster = tmp_path / f"c{code}.yaml"
        cluster.write_text(f"name: c\nkind: local\naccelerator: cpu\ncpus: 2\nmemory_gib: {memory}\n")
        args = [
            "run",
            "quickstart",
            "--detach",
            "--cluster",
            str(cluster),
            "--tracking-uri",
            f"sqlite:///{store}",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == code, result.output
        assert len(loads) == 1
    assert "does not fit on c" not in result.output and "pid 7" in result.output
    (cmd,) = started  # only the cluster it fits on started a child, with that cluster file
    assert cmd[cmd.index("--cluster") + 1] == str((tmp_path / "c0.yaml").resolve())


def test_plan_and_clusters_are_commands_of_the_main_app():
    result = CliRunner().invoke(app, ["plan", "--preset", "debug", "--cluster", "h100x8"])
    assert result.exit_code == 0, result.output
    assert "training memory per GPU" in result.output
    peak = next(line for line in result.output.splitlines() if line.startswith("│ peak "))
    assert peak.removesuffix("│").rstrip().endswith("of 72.00 GiB: fits"), peak  # the verdict, H100 capacity
    args = ["--preset", "paper-2.6b", "--gpus", "1", "--zero-stage", "0", "--micro-batch", "64"]
    too_big = CliRunner().invoke(app, ["plan", *args, "--cluster", "h100x8"])
    peak = next(line for line in too_big.output.splitlines() if line.startswith("│ peak "))
    assert peak.removesuffix("│").rstrip().endswith(": does not fit"), peak
    shown = CliRunner().invoke(app, ["clusters", "show", "h100x8"])
    assert shown.exit_code == 0 and "h100-sxm" in shown.output


BLOCK_IN_API_IMPORT = """
import os, pathlib, signal, sys, time

# Ctrl-C as a terminal delivers it: a non-interactive shell starts background jobs (`make test &`) with
# SIGINT ignored, which the child inherits and the CLI rightly keeps (it then installs no handler).
signal.signal(signal.SIGINT, signal.default_int_handler)


class Block:  # the api's import (which `run` and `validate` need) stops here until the test presses Ctrl-C
    def find_spec(self, name, path, target=None):
        if name == "orchestrator.api":
            pathlib.Path(os.environ["HOOK_MARKER"]).write_text("reached")
            time.sleep(600)


sys.meta_path.insert(0, Block())
"""


def test_ctrl_c_while_the_callback_imports_the_api_exits_130_at_once(tmp_path):
    """The api is imported in the app's callback (not at start-up: `compare` must not pay for it), still
    under early_interrupt: a press then ends the command line at once, 130, no traceback."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_IN_API_IMPORT)
    marker = tmp_path / "reached"
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{REPO}", HOOK_MARKER=str(marker), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "orchestrator.cli", "validate", "quickstart"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert out.strip() == "interrupted", out
