"""Clusters as Ray users run them: `isosparse run` submitted as a Ray job (RAY_ADDRESS, and the KubeRay
RayJob's entrypoint) runs its jobs on that cluster's node; and the four ways auth meets a token file
(cluster with or without token auth × ~/.ray/auth_token or none), each with a HOME of its own (the real
~/.ray/auth_token is shared with other runs on this machine). Heads: tests/orchestrator/conftest.py."""

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import HEAD_TOKEN, REPO, clean_env
from mlflow import MlflowClient

from clusters import kuberay
from orchestrator.suites.cluster_file import load_cluster
from results import names

pytestmark = pytest.mark.ray

SUITE = """
experiment: {experiment}
resources:
  dummy: {{num_cpus: 0.5}}
matrix:
  jobs: [dummy]
  presets: [debug]
  variants: [{{name: a, dummy: {{value: 4}}}}]
dummy: {{steps: 2}}
"""


def write_suite(folder: Path, experiment: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{experiment}.yaml"
    path.write_text(textwrap.dedent(SUITE.format(experiment=experiment)))
    return path


def job_runs(store: str, experiment: str):
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id])
    return [r for r in runs if r.data.tags.get(names.TAG_RUN_TYPE) == "job"]


def head_node_ids(head) -> set[str]:
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    cmd = [ray_bin, "list", "nodes", "--address", head.dashboard, "--format", "json"]
    listed = subprocess.run(
        cmd, env=clean_env(head.home), capture_output=True, text=True, timeout=60, check=True
    )
    return {node["node_id"] for node in json.loads(listed.stdout)}


@pytest.mark.parametrize("entry", ["plain", "kuberay"])
def test_isosparse_run_as_a_ray_job_runs_on_that_clusters_node(noauth_head, tmp_path, entry):
    """A Ray job's driver learns its cluster from RAY_ADDRESS only: a plain `isosparse run SUITE` and the
    RayJob manifest's entrypoint (`--address auto`) both attach to it, not to a new local cluster."""
    suite = write_suite(tmp_path, f"as-a-job-{entry}")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = f"isosparse run {suite}"
    if entry == "kuberay":
        cluster = load_cluster(str(REPO / "clusters" / "examples" / "kuberay.yaml"))
        command = kuberay.rayjob_manifest(cluster, str(suite))["spec"]["entrypoint"]
        assert command == f"isosparse run {suite} --address auto"
    command = command.replace("isosparse", f"{sys.executable} -m orchestrator.cli", 1)
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    submit = [ray_bin, "job", "submit", "--address", noauth_head.dashboard, "--",
              "bash", "-c", f"cd {tmp_path} && {command} --tracking-uri {store}"]  # fmt: skip
    done = subprocess.run(
        submit, env=clean_env(noauth_head.home), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = job_runs(store, f"as-a-job-{entry}")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags[names.TAG_RAY_NODE] in head_node_ids(noauth_head)  # the head's node, no other


def run_cli(tmp_path: Path, address: str, token_file: str | None) -> tuple[subprocess.CompletedProcess, str]:
    """`isosparse run` in a fresh process as a user runs it: no RAY_* variable, a HOME of its own with
    ~/.ray/auth_token holding `token_file` (None: no file)."""
    home = tmp_path / "user-home"
    if token_file is not None:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(token_file)
    suite = write_suite(tmp_path, "auth")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = clean_env(home, ISOSPARSE_HOME=str(tmp_path / "iso"))
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "run",
        str(suite),
        "--address",
        address,
        "--tracking-uri",
        store,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path), store


STALE = "a-token-left-by-a-local-run-0123456789"  # what every default local run writes to ~/.ray/auth_token


@pytest.mark.parametrize(
    ("cluster_auth", "token_file", "form"),
    [(False, None, "gcs"), (False, STALE, "gcs"), (True, HEAD_TOKEN, "gcs"),
     pytest.param(False, STALE, "client", marks=pytest.mark.slow),
     pytest.param(False, None, "client", marks=pytest.mark.slow),
     pytest.param(True, HEAD_TOKEN, "client", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_cluster_is_reached_the_way_its_auth_is_set_up(request, tmp_path, cluster_auth, token_file, form):
    head = request.getfixturevalue("token_head" if cluster_auth else "noauth_head")
    done, store = run_cli(tmp_path, head.gcs if form == "gcs" else head.client, token_file)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert [r.info.status for r in job_runs(store, "auth")] == ["FINISHED"]


@pytest.mark.parametrize("token_file", [None, STALE])
def test_a_token_cluster_without_its_token_is_exit_2_with_a_hint_and_nothing_recorded(
    tmp_path, token_head, token_file
):
    started = time.monotonic()
    done, store = run_cli(tmp_path, token_head.gcs, token_file)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - started < 60  # fails at the probe, not after Ray's retries
    expected = "no token is set" if token_file is None else "refused the token"
    assert expected in done.stdout and "RAY_AUTH_TOKEN" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert MlflowClient(store).get_experiment_by_name("auth") is None
