"""A model-free job for testing the orchestrator: sleeps, streams fake metrics, raises, allocates, or
kills its own process on request — exercising scheduling, failure classes and retries in seconds.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workloads.fields import NonNegFloat, NonNegInt, check_fields
from workloads.jobs.contention import TimedPhase
from workloads.jobs.result import BenchResult, JobContext, to_jsonable

ERRORS = {"RuntimeError": RuntimeError, "ValueError": ValueError, "MemoryError": MemoryError}


@dataclass(frozen=True)
class DummyJobConfig:
    """steps × sleep_s of pretend work, logging "train/loss" = 1/(step+1) each step.

    fail_at_step: raise `error` (a name in ERRORS) when that step starts — an application failure.
    allocate_mb: hold this many MiB of host memory during the job (to test memory accounting / OOM).
    crash_marker: a file path; if it does not exist yet, create it and kill this process with
        os._exit(1) at the first step (the worker dies, as on node loss) — so exactly the first attempt
        crashes and a retry finishes. Lets a test check "retried, exactly one FINISHED run".
    value: echoed as metric "dummy/value" (lets tests tell jobs apart).
    ignore_cancel: swallow the KeyboardInterrupt that a cancel raises and keep running, as a job stuck in
        native code does: cancelling it takes the driver's whole grace period and then Ray's forced kill
        (lets a test press Ctrl-C a second time while the first cancel is still under way).
    """

    steps: NonNegInt = 3
    sleep_s: NonNegFloat = 0.0
    fail_at_step: int | None = None
    error: Literal["RuntimeError", "ValueError", "MemoryError"] = "RuntimeError"  # a key of ERRORS
    allocate_mb: NonNegInt = 0
    crash_marker: str | None = None
    value: float = 0.0
    ignore_cancel: bool = False

    def __post_init__(self) -> None:
        check_fields(self)


def _step(cfg: DummyJobConfig, ctx: JobContext, step: int) -> None:
    if cfg.crash_marker is not None and not Path(cfg.crash_marker).exists():
        Path(cfg.crash_marker).touch()
        os._exit(1)
    if cfg.fail_at_step is not None and step == cfg.fail_at_step:
        raise ERRORS[cfg.error](f"dummy job failing on request at step {step}")
    time.sleep(cfg.sleep_s)
    ctx.log({"train/loss": 1.0 / (step + 1)}, step)


def run(cfg: DummyJobConfig, ctx: JobContext | None = None) -> BenchResult:
    ctx = ctx or JobContext()
    ballast = bytearray(cfg.allocate_mb * 2**20)  # zero-filled, so the pages are really touched
    start = time.perf_counter()
    with TimedPhase() as phase:  # the pretend timed phase: its bounds are recorded as a real job's are
        for step in range(cfg.steps):
            if ctx.stop_requested():
                break
            try:
                _step(cfg, ctx, step)
            except KeyboardInterrupt:  # Ray's cancel of a running task
                if not cfg.ignore_cancel:
                    raise
    elapsed = time.perf_counter() - start
    metrics = {"dummy/value": float(cfg.value), "dummy/elapsed_s": elapsed, "mem/ballast_bytes": len(ballast)}
    metrics |= phase.metrics()
    if cfg.steps:
        metrics["train/loss"] = 1.0 / cfg.steps
    info = {"hardware": ctx.hardware or "", "pid": os.getpid()}  # pid: tells fresh workers from reused ones
    return BenchResult(kind="dummy", config=to_jsonable(cfg), metrics=metrics, info=info)


def run_interleaved(cfgs: list[DummyJobConfig], ctxs: list[JobContext] | None = None) -> list[BenchResult]:
    """Several dummy jobs in one process, their steps alternating, as `infer.run_interleaved` alternates
    generations: exercises `timing: interleaved` in seconds. dummy/pid tells which process ran a job."""
    ctxs = ctxs or [JobContext() for _ in cfgs]
    with TimedPhase() as phase:
        for step in range(max(c.steps for c in cfgs)):
            for cfg, ctx in zip(cfgs, ctxs, strict=True):
                if step < cfg.steps:
                    _step(cfg, ctx, step)
    metrics = phase.metrics() | {"dummy/pid": float(os.getpid())}
    return [
        BenchResult(
            kind="dummy",
            config=to_jsonable(c),
            metrics=metrics | {"dummy/value": float(c.value)},
            info={"hardware": x.hardware or ""},
        )
        for c, x in zip(cfgs, ctxs, strict=True)
    ]
