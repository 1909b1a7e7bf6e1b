"""An existing token-auth Ray cluster, as the README describes it: `ray start --head` (its own free ports,
token auth, stopped by its PID), then `isosparse run SUITE --address HOST:PORT` (and, slow, the Ray client
form ray://HOST:PORT) with only RAY_AUTH_TOKEN set — no RAY_AUTH_MODE — in a fresh process, as a user
runs it. ~45 s with the wrong-token case, so it runs in `make test` (marker ray)."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from conftest import HEAD_TOKEN, clean_env, ray_head

pytestmark = pytest.mark.ray

TOKEN = HEAD_TOKEN
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


def user_env(home: Path) -> dict[str, str]:
    """A user's shell after the README's steps: RAY_AUTH_TOKEN exported, nothing else about Ray."""
    return clean_env(home, RAY_AUTH_TOKEN=TOKEN)


@pytest.fixture()
def head(tmp_path):
    """A real Ray head with token auth on free ports (tests/orchestrator/conftest.py)."""
    with ray_head(tmp_path / "head-home", auth=True) as running:
        yield {"gcs": running.gcs, "client": running.client}


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
