"""Which cluster the driver uses and its auth environment, without starting Ray: the default is a new
local cluster whatever the machine's Ray state; an unreachable cluster fails fast (exit 2), nothing
recorded."""

import socket

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.runs import ray_link


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def test_default_address_is_a_new_local_cluster_whatever_the_machine_says(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # neither may redirect a default run
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    assert ray_link.resolve(None) == "local"
    assert ray_link.check_reachable(None) == "local"  # no probe, no error


def test_auth_mode_is_token_only_for_an_existing_cluster_with_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    assert ray_link.ray_env(None) == {}  # a local cluster: Ray makes its own token
    assert ray_link.ray_env("ray://head:10001") == {"RAY_AUTH_MODE": "token"}
    assert ray_link.ray_env("auto") == {"RAY_AUTH_MODE": "token"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert ray_link.ray_env("head:6379") == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")  # the README's other way
    assert ray_link.ray_env("head:6379") == {"RAY_AUTH_MODE": "token"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice wins
    assert ray_link.ray_env("head:6379") == {}


@pytest.mark.parametrize(
    ("address", "expected"),
    [("head:6379", ("head", 6379)), ("ray://head:10001", ("head", 10001)), ("ray://head", ("head", 10001)),
     ("10.1.2.3", ("10.1.2.3", 6379)), ("[::1]:6380", ("::1", 6380))],
)  # fmt: skip
def test_host_port_of_gcs_and_client_addresses(address, expected):
    assert ray_link.host_port(address) == expected


def test_auto_without_a_running_cluster_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ray_link.ClusterError, match="no running Ray cluster"):
        ray_link.check_reachable("auto")


def test_auto_with_a_stale_cluster_file_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{closed_port()}\n")
    with pytest.raises(ray_link.ClusterError, match="found by --address auto"):
        ray_link.check_reachable("auto")


def test_run_against_an_unreachable_cluster_exits_2_fast_and_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    suite = tmp_path / "s.yaml"
    suite.write_text("experiment: nowhere\nmatrix: {jobs: [dummy], presets: [debug]}\n")
    store = tmp_path / "mlflow.db"
    address = f"127.0.0.1:{closed_port()}"
    probes = []

    def probe(*args, **kwargs):  # fast = refused by the TCP probe, before Ray's own retrying connect
        probes.append(args)
        return real_probe(*args, **kwargs)

    real_probe = ray_link.check_reachable
    monkeypatch.setattr(ray_link, "check_reachable", probe)
    result = CliRunner().invoke(app, ["run", str(suite), "--address", address,
                                      "--tracking-uri", f"sqlite:///{store}"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert probes == [(address,)]  # the probe refused it, so Ray never tried (no bound on a busy box's speed)
    assert f"Ray cluster at {address} is unreachable" in result.output
    from mlflow import MlflowClient

    assert MlflowClient(f"sqlite:///{store}").get_experiment_by_name("nowhere") is None
