"""An existing token-auth Ray cluster, as the README describes it: `ray start --head` (its own free ports,
token auth, stopped by its PID), then `isosparse run SUITE --address HOST:PORT` (and, slow, the Ray client
form ray://HOST:PORT) with only RAY_AUTH_TOKEN set — no RAY_AUTH_MODE — in a fresh process, as a user
runs it. ~45 s with the wrong-token case, so it runs in `make test` (marker ray)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
TOKEN = "isosparse-test-token-0123456789abcdef"
SUITE = """
experiment: on-a-head
resources:
  dummy: {num_cpus: 0.5}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants: [{name: a, dummy: {value: 4}}]
dummy: {steps: 2}
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def user_env(home: Path) -> dict[str, str]:
    """A user's shell after the README's steps: RAY_AUTH_TOKEN exported, nothing else about Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(home), "RAY_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return env


@pytest.fixture()
def head(tmp_path):
    """A real Ray head with token auth on free ports; yields 'HOST:PORT'."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    gcs, client, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**user_env(tmp_path / "head-home"), "RAY_AUTH_MODE": "token"}
    cmd = [ray_bin, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
           "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp,
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
           "--metrics-export-port", str(metrics)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ray start --head did not come up") from None
                time.sleep(0.5)
        yield {"gcs": f"127.0.0.1:{gcs}", "client": f"ray://127.0.0.1:{client}"}
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: the head stops every process it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("form", ["gcs", pytest.param("client", marks=pytest.mark.slow)])
def test_run_on_an_existing_token_auth_cluster_with_only_the_readme_steps(tmp_path, head, form):
    suite = tmp_path / "head.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**user_env(tmp_path / "user-home"), "ISOSPARSE_HOME": str(tmp_path / "iso")}
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--address", head[form],
           "--tracking-uri", store]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "InvalidAuthToken" not in done.stdout + done.stderr
    assert " INFO " not in done.stdout + done.stderr  # quiet: no MLflow / Ray INFO lines on a normal run
    assert "\x1b[" not in done.stdout  # piped: no ANSI codes
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["on-a-head"], filter_string="tags.`isosparse.kind` = 'job'")
    assert list(runs["status"]) == ["FINISHED"] and runs["metrics.dummy/value"].iloc[0] == 4.0


def test_a_wrong_token_is_refused_with_a_clear_message_and_nothing_recorded(tmp_path, head):
    suite = tmp_path / "head.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    store = tmp_path / "mlflow.db"
    env = {**user_env(tmp_path / "user-home"), "RAY_AUTH_TOKEN": "not-the-token-0123456789abcdef"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--address", head["gcs"],
           "--tracking-uri", f"sqlite:///{store}"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert "RAY_AUTH_TOKEN" in done.stdout and "Traceback" not in done.stdout + done.stderr
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    assert mlflow.get_experiment_by_name("on-a-head") is None
