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


def test_default_address_is_a_new_local_cluster_whatever_a_stale_cluster_file_says(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # only --address auto reads it
    assert ray_link.resolve(None) == "local"
    assert ray_link.check_reachable(None) == "local"  # no probe, no error
    with pytest.raises(ray_link.ClusterError, match="found by --address auto: 127.0.0.1:1"):
        ray_link.check_reachable("auto")


def test_address_order_is_explicit_then_ray_address_then_local(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # how a Ray job's driver learns its cluster
    assert ray_link.resolve(None) == "10.0.0.1:6379"
    assert ray_link.resolve("ray://other:10001") == "ray://other:10001"
    monkeypatch.setenv("RAY_ADDRESS", "  ")
    assert ray_link.resolve(None) == "local"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_link.resolve(None) == "local"


def test_an_unreachable_ray_address_says_where_the_address_came_from(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    with pytest.raises(ray_link.ClusterError, match=r"\(from RAY_ADDRESS\) is unreachable"):
        ray_link.check_reachable(None)


def test_a_dashboard_url_is_refused_with_the_address_a_driver_needs(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # what `ray job submit` wants, not ray.init
    with pytest.raises(ray_link.ClusterError, match="dashboard .* HOST:6379 or ray://HOST:10001"):
        ray_link.check_reachable(None)


def test_the_token_is_found_where_ray_looks_for_it(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ray_link.token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert ray_link.token() == "from-home"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert ray_link.token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_link.token() == "from-env"


def test_auth_mode_follows_what_the_cluster_wants(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    wants = {"none": False}
    monkeypatch.setattr(ray_link, "auth_probe", lambda target, with_token=None: wants[with_token or "none"])
    assert ray_link.ray_env("local") == {}  # a local cluster: Ray makes its own token
    assert ray_link.ray_env("head:6379") == {"RAY_AUTH_MODE": "disabled"}  # no auth: the token is not sent
    wants.update(none=True, secret=False)
    assert ray_link.ray_env("ray://head:10001") == {"RAY_AUTH_MODE": "token"}
    wants.update(secret=True)
    with pytest.raises(ray_link.ClusterError, match="refused the token: set RAY_AUTH_TOKEN"):
        ray_link.ray_env("head:6379")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    with pytest.raises(ray_link.ClusterError, match="uses token authentication and no token is set"):
        ray_link.ray_env("head:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice wins
    assert ray_link.ray_env("head:6379") == {}


def test_a_listener_that_is_no_ray_head_is_refused_by_the_auth_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # accepts TCP, never speaks gRPC
        with pytest.raises(ray_link.ClusterError, match="does not answer as a Ray head"):
            ray_link.auth_probe(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=1.0)


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
