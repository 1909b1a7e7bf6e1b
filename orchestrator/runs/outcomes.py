"""What a job attempt reports to the driver (`Event`s while it runs, one `Completion`), its failure class
(results.names.OUTCOMES) keyed on exception types (STYLE.md), and the `on_oom: halve_batch` retry.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ray import exceptions as rex

from orchestrator.suites.spec import Outcome


@dataclass(frozen=True)
class Event:
    """Something a running job told the driver: kind "start" (payload: node, host, hardware, t), "metrics"
    (payload: {name: value}, with step) or "end" (payload: t, when the job stopped occupying its node)."""

    job: str
    attempt: int
    kind: str
    payload: dict[str, Any]
    step: int = 0


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
# torch's CPU allocator (and CUDA/HIP under older torch) reports an allocation failure as a plain
# RuntimeError: its message is the only thing that tells it from an application error.
OOM_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory",
    "CUDA error: out of memory",
    "HIP out of memory",
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
    gradient accumulation (the same tokens per optimizer step, so the same training run and fingerprint);
    None when the config has no micro-batch to halve (infer sweeps, dummy) or it is odd (halving would
    change the tokens per step)."""
    batch, accum = getattr(config, "batch_size", None), getattr(config, "grad_accum", None)
    if not isinstance(batch, int) or not isinstance(accum, int) or batch < 2 or batch % 2:
        return None
    return replace(config, batch_size=batch // 2, grad_accum=accum * 2)
