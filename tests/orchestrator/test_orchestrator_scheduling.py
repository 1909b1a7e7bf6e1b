"""Failure classes key on exception types (no cluster needed)."""

from dataclasses import dataclass

import pytest
import torch
from ray import exceptions as rex

from orchestrator.runs.scheduling import classify, halved_micro_batch, one_line, plain


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
        # torch's CPU allocator raises a plain RuntimeError; CUDA raises torch.OutOfMemoryError
        (
            task_error(
                RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't "
                    "allocate memory: you tried to allocate 1099511627776 bytes."
                )
            ),
            "oom",
        ),
        (task_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")), "oom"),
        (task_error(RuntimeError("CUDA error: out of memory")), "oom"),
        (task_error(RuntimeError("shape mismatch: out of range")), "failed"),
    ],
)
def test_classify_keys_on_exception_types(error, outcome):
    assert classify(error) == outcome


def test_a_real_cpu_allocation_failure_is_oom():
    try:
        torch.empty(2**60, dtype=torch.uint8)  # 1 EiB: the CPU allocator refuses
    except RuntimeError as err:
        assert classify(task_error(err)) == "oom"
    else:
        pytest.fail("allocating 1 EiB succeeded")


@dataclass(frozen=True)
class Train:
    batch_size: int
    grad_accum: int


@dataclass(frozen=True)
class Infer:
    batch_sizes: tuple[int, ...]


def test_halved_micro_batch_keeps_tokens_per_step():
    assert halved_micro_batch(Train(8, 2)) == Train(4, 4)
    assert halved_micro_batch(Train(2, 1)) == Train(1, 2)
    assert halved_micro_batch(Train(1, 4)) is None  # nothing left to halve
    assert halved_micro_batch(Train(3, 1)) is None  # 1 + 1 tokens per step would not be 3
    assert halved_micro_batch(Infer((1, 8))) is None


def test_one_line_is_the_last_line_of_the_message():
    assert one_line(task_error(ValueError("bad\nvalue\n\n"))) == "ValueError: value"
    assert one_line(RuntimeError()) == "RuntimeError: "


def test_ansi_codes_are_stripped_from_errors():
    coloured = "\x1b[36mray::_task_body()\x1b[39m (pid=1)\n\x1b[1;31mValueError: bad\x1b[0m"
    assert plain(coloured) == "ray::_task_body() (pid=1)\nValueError: bad"
    assert one_line(RuntimeError(coloured)) == "RuntimeError: ValueError: bad"
