"""Failure classes key on exception types (no cluster needed)."""

import pytest
from ray import exceptions as rex

from orchestrator.scheduling import classify


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
