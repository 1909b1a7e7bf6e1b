"""What a job attempt reports to the driver (`Event`s while it runs, one `Completion`), its failure class
(results.names.OUTCOMES) keyed on exception types (STYLE.md), and the `on_oom: halve_batch` retry.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ray import exceptions as rex

from orchestrator.suites.spec import JobSpec, Outcome


@dataclass(frozen=True)
class Event:
    """Something a running job told the driver: kind "start" (payload: node, host, hardware, t), "metrics"
    (payload: {name: value}, with step) or "end" (payload: t, when the job stopped occupying its node).
    time_s: when a "metrics" event was emitted, on the worker's monotonic clock (only differences within
    one attempt mean something: the driver drains events in batches, so their arrival says nothing of how
    fast the steps ran)."""

    job: str
    attempt: int
    kind: str
    payload: dict[str, Any]
    step: int = 0
    time_s: float | None = None


@dataclass(frozen=True)
class Completion:
    """One attempt's end. result_json: the BenchResult JSON when finished; error: a one-line summary;
    blocked: the job never started because the job it runs after did not finish (recorded as cancelled)."""

    job: str
    attempt: int
    outcome: Outcome
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    will_retry: bool = False
    blocked: bool = False
    retry_job: JobSpec | None = None  # what the retry runs when it differs (an OOM-halved micro-batch)


INFRA_ERRORS: tuple[type[BaseException], ...] = (
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.ActorDiedError,
    rex.ActorUnavailableError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.RaySystemError,
)
OOM_NAMES = ("OutOfMemoryError", "MemoryError")  # torch.cuda.OutOfMemoryError / Python's, by type name
# torch's allocators (CPU always, CUDA/HIP under older torch or from the driver) report an allocation
# failure as a plain RuntimeError: its message is the only thing that tells it from an application error.
# Every wording torch 2.x raises (c10/core/impl/alloc_cpu.cpp, c10/cuda, the MPS/XPU allocators):
OOM_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",  # posix_memalign failed (Linux, macOS)
    "DefaultCPUAllocator: not enough memory",  # _aligned_malloc / memalign failed (Windows, Android)
    "C10 Out of Memory",  # c10::OutOfMemoryError's own text
    "CUDA out of memory",  # the caching allocator
    "CUDA error: out of memory",  # the driver (cudaMalloc outside the cache, context creation)
    "HIP out of memory",
    "HIP error: out of memory",
    "MPS backend out of memory",
    "XPU out of memory",
    "std::bad_alloc",
)
OnOom = Literal["fail", "halve_batch"]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Ray colours task tracebacks for terminals


def plain(text: str) -> str:
    """Text without ANSI escape codes (they end up in traceback.txt, MLflow tags and piped logs)."""
    return ANSI.sub("", text)


def one_line(err: BaseException) -> str:
    """'Type: last line of the message' of the job's own exception (a Ray task error's cause)."""
    err = getattr(err, "cause", None) or err
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return plain(f"{type(err).__name__}: {lines[-1].strip() if lines else ''}")


DEVICE_OOM_MESSAGES = tuple(m for m in OOM_MESSAGES if not m.startswith(("Default", "std::")))


def oom_summary(err: BaseException, job: str, on_oom: OnOom) -> str:
    """The one line of an `oom` (a MemoryError has no message at all): what ran out, in which job, and
    what to do about it."""
    chain = list(_job_ancestors(err))
    if any(isinstance(e, rex.OutOfMemoryError) for e in chain):
        what = "the node's memory ran out (Ray's memory monitor killed the worker)"
    elif any(
        type(e).__name__ == "OutOfMemoryError" or any(m in str(e) for m in DEVICE_OOM_MESSAGES) for e in chain
    ):
        what = "GPU memory ran out"
    else:
        what = "host memory ran out"
    hint = "lower its batch_size or seq_len, or give it more memory (resources: memory_gb"
    hint += ", num_gpus)" if what.startswith("GPU") else ")"
    if on_oom == "fail":
        hint += ", or set on_oom: halve_batch"
    first = one_line(err).rstrip(": ")
    return f"{first}: {what} in job {job}; {hint}"


def summary(err: BaseException, outcome: Outcome, job: str, on_oom: OnOom) -> str:
    """A Completion's one-line error: no TaskID noise, and what ran out for an `oom`."""
    if outcome == "cancelled":
        return "cancelled"
    return oom_summary(err, job, on_oom) if outcome == "oom" else one_line(err)


def _job_ancestors(err: BaseException) -> Iterable[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        for extra in getattr(err, "worker_failures", {}).values() if hasattr(err, "worker_failures") else ():
            yield from _job_ancestors(extra)
        err = getattr(err, "cause", None) or err.__cause__


def classify(err: BaseException) -> Outcome:
    """The failure class of an exception from `ray.get` (or of one a Ray Train run wraps)."""
    chain = list(_job_ancestors(err))
    if any(isinstance(e, rex.TaskCancelledError | KeyboardInterrupt) for e in chain):
        return "cancelled"
    if any(isinstance(e, rex.OutOfMemoryError) for e in chain):
        return "oom"
    if any(isinstance(e, INFRA_ERRORS) for e in chain):
        return "infra"
    if any(type(e).__name__ in OOM_NAMES for e in chain):
        return "oom"
    if any(isinstance(e, RuntimeError) and any(m in str(e) for m in OOM_MESSAGES) for e in chain):
        return "oom"
    return "failed"


def halved_micro_batch(config: Any) -> Any | None:
    """The suite's `on_oom: halve_batch` retry: the same job with half the micro-batch and twice the
    gradient accumulation (the same tokens per optimizer step, so the same training run); None when the
    config has no micro-batch to halve (infer sweeps, dummy) or it is odd (halving would change the tokens
    per step)."""
    batch, accum = getattr(config, "batch_size", None), getattr(config, "grad_accum", None)
    if not isinstance(batch, int) or not isinstance(accum, int) or batch < 2 or batch % 2:
        return None
    return replace(config, batch_size=batch // 2, grad_accum=accum * 2)


def oom_retry(job: JobSpec) -> JobSpec | None:
    """The job an `on_oom: halve_batch` retry runs (`halved_micro_batch`), recorded as what it is: its
    own params and fingerprint, the suite's fingerprint as `requested_fingerprint`; None if none."""
    smaller = halved_micro_batch(job.config)
    return None if smaller is None else job.with_config(smaller)
