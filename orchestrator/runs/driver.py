"""The live side of a suite run: each job's state for the progress display, and the Driver that turns the
scheduler's events and completions into MLflow runs (one nested run per attempt) and state changes.
Details: docs/orchestrator.md#orchestratorrunsdriver."""

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.runs import interrupts, timing
from orchestrator.runs.tracking import Tracker
from orchestrator.suites.expansion import Suite
from results import names
from results.schema import match_error


@dataclass
class JobState:
    """Live state of one job for the progress display. state: queued | running | a failure class |
    finished | skipped (FINISHED before, not re-run)."""

    name: str
    kind: str
    labels: dict[str, str]
    state: str = "queued"
    attempt: int = 1
    step: int | None = None
    loss: float | None = None
    run_id: str | None = None
    error: str | None = None
    started_s: float | None = None
    total_steps: int | None = None  # from the job's config when it has steps (progress lines, ETA)
    tokens_per_step: int | None = None
    log_every: int = 1  # the job streams its steps in flushes of this many (train's log_every)
    first_metric: tuple[float, int] | None = None  # (job's clock s, step) at this attempt's first flush
    last_metric: tuple[float, int] | None = None  # the same at its latest flush

    def flushed_at(self, step: int) -> bool:
        """Whether `step` ends a flush: a flush streams `log_every` steps back to back, so only its last
        step's timestamp says when the step ran (the others were timed when they were sent)."""
        return (step + 1) % self.log_every == 0 or step + 1 == self.total_steps

    def rate_steps_per_s(self) -> float | None:
        """Steps per second between this attempt's first and latest flush, timed by the job's own clock;
        None before two flushes."""
        if self.first_metric is None or self.last_metric is None:
            return None
        (first_s, first_step), (last_s, last_step) = self.first_metric, self.last_metric
        if last_step <= first_step or last_s <= first_s:
            return None
        return (last_step - first_step) / (last_s - first_s)


def job_state(job) -> JobState:
    """The initial JobState of a JobSpec, with its step count and tokens per step when the config has them."""
    config, workers = job.config, job.resources.num_workers
    total = getattr(config, "steps", None)
    if callable(getattr(config, "total_steps", None)):
        total = config.total_steps(workers)
    tokens = None
    if callable(getattr(config, "tokens_per_step_per_rank", None)):
        tokens = config.tokens_per_step_per_rank() * workers
    total = total if isinstance(total, int) else None
    every = getattr(config, "log_every", 1)
    every = every if isinstance(every, int) and every > 0 else 1
    return JobState(
        job.name, job.kind, job.labels, total_steps=total, tokens_per_step=tokens, log_every=every
    )


@dataclass
class Driver:
    """Connects scheduler callbacks to MLflow runs and to the live JobState table."""

    suite: Suite
    tracker: Tracker
    parent: str
    report: Any  # orchestrator.api.RunReport: its jobs (name → JobState) are what the driver updates
    timing_enforced: bool = True  # the cluster's nodes declare timing.TIMING_RESOURCE
    runs: dict[tuple[str, int], str] = field(default_factory=dict)
    occupancy: dict[tuple[str, int], timing.Occupancy] = field(default_factory=dict)
    retried: dict[tuple[str, int], Any] = field(default_factory=dict)  # attempts that run another config

    def _run(self, name: str, attempt: int, extra: dict[str, str] | None = None) -> str:
        key = (name, attempt)
        if key not in self.runs:
            job = self._spec(name, attempt)
            error = match_error(job.match.get("active_rel_err"), job.match.get("total_rel_err")) or 0.0
            tags = {
                names.TAG_SUITE: self.suite.name,
                names.TAG_MATCH_ERROR: f"{error:.6f}",
                names.TAG_TIMING: job.timing,
                **(extra or {}),
            }
            self.runs[key] = self.tracker.start_job(self.suite.experiment, self.parent, job, attempt, tags)
        return self.runs[key]

    def _spec(self, name: str, attempt: int = 1):
        """The JobSpec an attempt runs: the suite's, or the one its retry was given (Completion.retry_job)."""
        return self.retried.get((name, attempt)) or next(j for j in self.suite.jobs if j.name == name)

    def on_event(self, event) -> None:
        with interrupts.deferred():  # a run created is a run remembered (and closed on Ctrl-C)
            self._on_event(event)

    def _on_event(self, event) -> None:
        state = self.report.jobs[event.job]
        if event.kind == "start":
            state.step, state.loss, state.first_metric, state.last_metric = None, None, None, None
            tags = {
                names.TAG_RAY_NODE: event.payload["node"],
                names.TAG_HOST: event.payload["host"],
                names.TAG_HARDWARE: event.payload["hw"],
            }
            state.run_id = self._run(event.job, event.attempt, tags)
            start_s = event.payload.get("t", time.time())
            self.occupancy[event.job, event.attempt] = timing.Occupancy(
                event.job, event.payload["node"], start_s
            )
            state.state, state.attempt, state.started_s = "running", event.attempt, time.monotonic()
            state.error = None  # the previous attempt's error was shown once, on its retry line
        elif event.kind == "end" and (event.job, event.attempt) in self.occupancy:
            key = (event.job, event.attempt)
            self.occupancy[key] = replace(self.occupancy[key], end_s=event.payload["t"])
        elif event.kind == "metrics":
            self.tracker.log_metrics(self._run(event.job, event.attempt), event.payload, event.step)
            sent_s = event.time_s if event.time_s is not None else time.monotonic()
            if state.flushed_at(event.step):
                state.first_metric = state.first_metric or (sent_s, event.step)
                state.last_metric = (sent_s, event.step)
            state.step = event.step
            state.loss = event.payload.get(names.TRAIN_LOSS, state.loss)

    def on_done(self, done) -> None:
        with interrupts.deferred():  # the run closed and the job's state updated together
            self._on_done(done)

    def _on_done(self, done) -> None:
        state = self.report.jobs[done.job]
        if done.outcome == "cancelled" and (done.job, done.attempt) not in self.runs and not done.blocked:
            state.state, state.error = "cancelled", done.error  # never started: no run to close
            return
        run_id = self._run(done.job, done.attempt)
        step = state.step if state.step is not None and state.attempt == done.attempt else 0
        fingerprint = self._spec(done.job, done.attempt).fingerprint
        self._record_contention(done, run_id, step)
        self.tracker.finish_job(run_id, fingerprint, self.suite.experiment, done, step)
        if getattr(done, "retry_job", None) is not None:
            self.retried[(done.job, done.attempt + 1)] = done.retry_job
        state.run_id, state.error = run_id, done.error
        if done.will_retry:
            state.error = f"retrying after {done.outcome}: {done.error}"
        state.state = "queued" if done.will_retry else done.outcome
        if done.will_retry:
            state.attempt = done.attempt + 1

    def _record_contention(self, done, run_id: str, step: int) -> None:
        """The job leaves its node; a finished job's timed phase gets how many other jobs occupied its
        node meanwhile (its interleaved partners excepted) and whether its speed numbers are contended."""
        key = (done.job, done.attempt)
        if key in self.occupancy and self.occupancy[key].end_s is None:  # no "end" event: ended by now
            self.occupancy[key] = replace(self.occupancy[key], end_s=time.time())
        if done.outcome != "finished" or not done.result_json or key not in self.occupancy:
            return
        metrics = json.loads(done.result_json).get("metrics", {})
        bounds = metrics.get(names.TIMING_PHASE_START_S), metrics.get(names.TIMING_PHASE_END_S)
        if None in bounds:
            return  # a job kind without a timed phase
        job = self._spec(done.job)
        partners = {
            j.name for unit in timing.interleaved_groups(self.suite.jobs) if job in unit for j in unit
        }
        others = [o for k, o in self.occupancy.items() if k != key]
        n = timing.overlapping_jobs(bounds, self.occupancy[key].node, others, partners | {done.job})
        contended = timing.contended(job.timing, self.timing_enforced, metrics, n)
        recorded = {
            names.TIMING_OVERLAPPING_JOBS: float(n),
            names.TIMING_ENFORCED: float(self.timing_enforced),
            names.TIMING_CONTENDED: float(contended),
        }
        self.tracker.log_metrics(run_id, recorded, step)
