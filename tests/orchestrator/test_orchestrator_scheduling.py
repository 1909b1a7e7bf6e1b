"""Failure classes key on exception types (no cluster needed), and Ray auth env for connecting."""

import pytest
from ray import exceptions as rex

from orchestrator.scheduling import classify, ray_env


def task_error(cause: BaseException) -> BaseException:
    """What ray.get raises for an exception in a task: a RayTaskError that is also the cause's type."""
    return rex.RayTaskError("job", "traceback", cause).as_instanceof_cause()


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (rex.WorkerCrashedError(), "infra"),
        (rex.NodeDiedError("node gone"), "infra"),
        (rex.OutOfMemoryError("killed by the memory monitor"), "oom"),
        (rex.TaskCancelledError(), "cancelled"),
        (task_error(RuntimeError("bad config")), "failed"),
        (task_error(ValueError("bad value")), "failed"),
        (task_error(MemoryError()), "oom"),
        (task_error(KeyboardInterrupt()), "cancelled"),
    ],
)
def test_classify_keys_on_exception_types(error, outcome):
    assert classify(error) == outcome


def test_ray_env_uses_token_auth_only_when_connecting_with_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    assert ray_env(None) == {}  # a local cluster: Ray makes its own token
    assert ray_env("ray://head:10001") == {"RAY_AUTH_MODE": "token"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert ray_env("ray://head:10001") == {}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_env("ray://head:10001") == {}
