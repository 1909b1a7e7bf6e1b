"""Ray scheduling of suite jobs (the only module importing ray): cluster start/connect, one Ray task per
single-device job, a Ray Train `TorchTrainer` gang per multi-worker job, failure classes and retries.
Details: docs/orchestrator.md#orchestratorrunsscheduling.
"""

import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as rex

from orchestrator.runs import ray_link
from orchestrator.runs.outcomes import Completion, Event, OnOom, classify, oom_retry, plain, summary
from orchestrator.runs.timing import TIMING_RESOURCE, interleaved_groups, timing_request
from orchestrator.suites import registry
from orchestrator.suites.spec import JobSpec, Outcome
from workloads import api as workloads

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("orchestrator", "workloads", "clusters", "results")


@ray.remote(num_cpus=0)
class _Sink:
    """Collects job events in arrival order; the driver drains them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def drain(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def flush(self) -> bool:
        return True  # calls from one caller run in order: once this returns, its earlier puts are in


@dataclass(frozen=True)
class Attempt:
    """What a worker needs to run one attempt of a job."""

    kind: str
    config: Any
    job: str
    attempt: int
    num_gpus: float
    checkpoint_dir: str | None
    num_cpus: float = 1.0  # torch's intra-op threads in the job: max(1, int(num_cpus))


def _hardware(num_gpus: float, config: Any) -> tuple[str, float | None]:
    """(hardware catalog name, dense peak FLOP/s for the job's dtype) of this worker's device; the raw
    device name and no peak when the catalog does not know it (MFU is then omitted, not guessed)."""
    if num_gpus <= 0:
        return "cpu", None
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    try:
        from clusters import catalog

        entry = catalog.identify(name)
        dtype = "float32" if getattr(config, "dtype", "auto") == "float32" else "bfloat16"
        return entry, catalog.peak_flops(entry, dtype)
    except (ImportError, ValueError):
        return name, None


def _job_context(sink, a: Attempt, report: bool):
    """The JobContext of one rank: rank 0 (`report`) streams events to the sink, others stay silent."""

    def on_metrics(metrics, step: int) -> None:
        sink.put.remote(Event(a.job, a.attempt, "metrics", dict(metrics), step, time.monotonic()))

    hardware, peak_flops = _hardware(a.num_gpus, a.config)
    if report:
        start = {
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "hw": hardware,
            "t": time.time(),  # when the job began to occupy its node (contention.overlapping_jobs)
        }
        sink.put.remote(Event(a.job, a.attempt, "start", start))
    return workloads.JobContext(
        on_metrics=on_metrics if report else None,
        peak_flops=peak_flops,
        hardware=hardware,
        checkpoint_dir=a.checkpoint_dir,
        threads=max(1, int(a.num_cpus)),
    )


def _ended(sink, attempts: list[Attempt]) -> None:
    """Tell the driver (before the task returns) when the job stopped occupying its node."""
    now = time.time()
    for a in attempts:
        sink.put.remote(Event(a.job, a.attempt, "end", {"t": now}))
    ray.get(sink.flush.remote())


def _run_job(a: Attempt, sink, report: bool = True) -> str:
    _, run = registry.get(a.kind).load()
    result = run(a.config, _job_context(sink, a, report))
    if report:
        _ended(sink, [a])
    return result.to_json()


_task = ray.remote(max_retries=0)(_run_job)
# max_calls=1: a new worker process per attempt (max_calls cannot be set through .options()).
_fresh_task = ray.remote(max_retries=0, max_calls=1)(_run_job)


@ray.remote(max_retries=0, max_calls=1)
def _interleaved_task(attempts: list[Attempt], sink) -> list[str]:
    """One process times a group's jobs together (`run_interleaved`): each job still streams and returns
    its own BenchResult, in the order given."""
    module = registry.get(attempts[0].kind).module()
    ctxs = [_job_context(sink, a, True) for a in attempts]
    results = module.run_interleaved([a.config for a in attempts], ctxs)
    _ended(sink, attempts)
    return [r.to_json() for r in results]


def timing_enforced() -> bool:
    """Whether every alive node with CPUs declares TIMING_RESOURCE (a local cluster does; nodes of an
    existing cluster need `ray start --resources='{"isosparse_timing": 1}'`). Without it no job asks for
    the resource, timed work is not kept apart, and the jobs' numbers are marked contended."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    return bool(nodes) and all(n["Resources"].get(TIMING_RESOURCE, 0) >= 1 for n in nodes)


@ray.remote(num_cpus=0, max_retries=0)
def _gang(a: Attempt, sink, resources, storage: str, timing: dict[str, float]) -> str:
    """Runs a multi-worker job as a TorchTrainer; rank 0's BenchResult travels back through the sink
    (Ray Train v2 drops metrics reported without a checkpoint, so it is not used for results)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, get_context
    from ray.train.torch import TorchTrainer

    def loop(_: dict) -> None:
        rank0 = get_context().get_world_rank() == 0
        result_json = _run_job(a, sink, report=rank0)
        if rank0:
            ray.get(sink.put.remote(Event(a.job, a.attempt, "result", {"json": result_json})))

    per_worker = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, **timing}
    if resources.memory_bytes:
        per_worker["memory"] = resources.memory_bytes
    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.num_gpus > 0,
            resources_per_worker=per_worker,
            placement_strategy=resources.placement,
        ),
        run_config=RunConfig(
            name=f"{a.job.replace('/', '_')}-a{a.attempt}",
            storage_path=storage,
            failure_config=FailureConfig(0),
        ),
    )
    trainer.fit()
    return ""  # the result came through the sink


def start(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Start an in-process local cluster (address None or "local") or connect to an existing one ("auto",
    "HOST:PORT", "ray://HOST:PORT"); returns its resources. Call `ray_link.prepare` before this module is
    imported (Ray reads its auth mode at import); failures to connect raise `ray_link.ClusterError`.

    Connecting ships this checkout's packages to the cluster's workers (runtime_env py_modules)."""
    if ray.is_initialized():
        return ray.cluster_resources()
    address = ray_link.prepare(address)  # the concrete address, reachable, auth environment set
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": "WARNING"}
    if address == ray_link.LOCAL:
        kwargs["num_cpus"] = num_cpus
        kwargs["resources"] = {TIMING_RESOURCE: 1}
    else:
        kwargs["runtime_env"] = {"py_modules": [str(REPO_ROOT / p) for p in CODE_PACKAGES]}
    # Ray's notice that a local cluster uses token auth is not news to the user of a local cluster.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    try:
        ray.init(**kwargs)
    except rex.AuthenticationError as err:
        raise ray_link.ClusterError(
            f"Ray cluster at {address} refused this driver: {err}. {ray_link.TOKEN_HINT}"
        ) from None
    except (ConnectionError, TimeoutError, RuntimeError) as err:  # Ray reports a refused token as these
        raise ray_link.ClusterError(
            f"cannot connect to the Ray cluster at {address}: {err}. If the "
            f"cluster uses token authentication, {ray_link.TOKEN_HINT}"
        ) from None
    return ray.cluster_resources()


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


@dataclass
class Scheduler:
    """Submits attempts, retries infra failures, and reports events and completions to callbacks.

    enforce_timing: ask for TIMING_RESOURCE (`timing_enforced()` of the cluster; False: no job asks)."""

    storage_path: str
    checkpoint_root: str | None
    on_event: Callable[[Event], None]
    on_done: Callable[[Completion], None]
    poll_s: float = 0.2
    on_oom: OnOom = "fail"
    enforce_timing: bool = True
    _sink: Any = None
    _pending: dict[Any, tuple[tuple[JobSpec, ...], int]] = field(default_factory=dict)
    _results: dict[tuple[str, int], str] = field(default_factory=dict)
    _waiting: dict[str, list[JobSpec]] = field(default_factory=dict)  # fingerprint → jobs held after it

    def __post_init__(self) -> None:
        self._sink = _Sink.remote()

    def _attempt(self, job: JobSpec, attempt: int) -> Attempt:
        # a dependent job reads the checkpoint folder of its job; an OOM-halved retry resumes its own
        folder = job.after or job.requested_fingerprint or job.fingerprint
        ckpt = None if self.checkpoint_root is None else f"{self.checkpoint_root}/{folder}"
        res = job.resources
        return Attempt(job.kind, job.config, job.name, attempt, res.num_gpus, ckpt, res.num_cpus)

    def _timing(self, job: JobSpec) -> dict[str, float]:
        return timing_request(job.timing, job.resources.num_workers) if self.enforce_timing else {}

    def submit(self, job: JobSpec, attempt: int = 1) -> None:
        res = job.resources
        a = self._attempt(job, attempt)
        if res.num_workers > 1:
            ref = _gang.remote(a, self._sink, res, self.storage_path, self._timing(job))
        else:
            options: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
            if res.memory_bytes:
                options["memory"] = res.memory_bytes
            options["resources"] = self._timing(job)
            task = _fresh_task if registry.get(job.kind).fresh_process else _task
            ref = task.options(**options).remote(a, self._sink)
        self._pending[ref] = ((job,), attempt)

    def submit_interleaved(self, jobs: tuple[JobSpec, ...], attempt: int = 1) -> None:
        """One task for a group's `interleaved` jobs: the most CPUs / GPUs any of them asks for, the sum
        of their memory (one process holds every model)."""
        options: dict[str, Any] = {
            "num_cpus": max(j.resources.num_cpus for j in jobs),
            "num_gpus": max(j.resources.num_gpus for j in jobs),
            "resources": self._timing(jobs[0]),
        }
        memory = sum(j.resources.memory_bytes or 0 for j in jobs)
        if memory:
            options["memory"] = memory
        attempts = [self._attempt(j, attempt) for j in jobs]
        self._pending[_interleaved_task.options(**options).remote(attempts, self._sink)] = (jobs, attempt)

    @property
    def active(self) -> int:
        return len(self._pending)

    def _drain(self) -> None:
        """Deliver streamed events; keep gang results (they may arrive ticks before their task ends)."""
        for event in ray.get(self._sink.drain.remote()):
            if event.kind == "result":
                self._results[(event.job, event.attempt)] = event.payload["json"]
            else:
                self.on_event(event)

    def _complete(self, ref, allow_retry: bool = True) -> None:
        jobs, attempt = self._pending.pop(ref)
        try:
            value = ray.get(ref)
            values = value if isinstance(value, list) else [value]
            done = [
                Completion(
                    job.name,
                    attempt,
                    "finished",
                    result_json=v or self._results.pop((job.name, attempt), None),
                )
                for job, v in zip(jobs, values, strict=True)
            ]
        except Exception as err:  # noqa: BLE001 - every exception is classified, none is swallowed
            outcome = classify(err)
            again = self._retry(jobs, outcome) if allow_retry and attempt <= jobs[0].max_retries else None
            line = summary(err, outcome, jobs[0].name, self.on_oom)
            tb = plain("".join(traceback.format_exception(err)))
            again_or = again or jobs
            changed = [None if new is job else new for job, new in zip(jobs, again_or, strict=True)]
            done = [
                Completion(
                    job.name,
                    attempt,
                    outcome,
                    error=line,
                    traceback=tb,
                    will_retry=again is not None,
                    retry_job=new,
                )
                for job, new in zip(jobs, changed, strict=True)
            ]
        for completion in done:
            self.on_done(completion)
        if done[0].will_retry:
            self._resubmit(again, attempt + 1)
            return
        for job, completion in zip(jobs, done, strict=True):
            self._release(job, completion)

    def _release(self, job: JobSpec, done: Completion) -> None:
        """The jobs held after `job`: submitted when it finished, else cancelled (they never start: what
        they would read does not exist), and so on down their own dependents."""
        for held in self._waiting.pop(job.requested_fingerprint or job.fingerprint, []):
            if done.outcome == "finished":
                self._resubmit((held,), 1)
                continue
            why = Completion(
                held.name, 1, "cancelled", error=f"cancelled: {job.name} ended {done.outcome}", blocked=True
            )
            self.on_done(why)
            self._release(held, why)

    def _resubmit(self, jobs: tuple[JobSpec, ...], attempt: int) -> None:
        if len(jobs) == 1 and jobs[0].timing != "interleaved":
            self.submit(jobs[0], attempt)
        else:
            self.submit_interleaved(jobs, attempt)

    def _retry(self, jobs: tuple[JobSpec, ...], outcome: Outcome) -> tuple[JobSpec, ...] | None:
        """What a retry runs: infra: the jobs again (up to max_retries); oom: only as the suite says
        (`on_oom`), never unchanged (`oom_retry` of every job); else None."""
        if outcome == "infra":
            return jobs
        if outcome != "oom" or self.on_oom != "halve_batch":
            return None
        smaller = tuple(oom_retry(job) for job in jobs)
        return None if any(s is None for s in smaller) else smaller

    def _collect(self, timeout_s: float, allow_retry: bool = True) -> None:
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout_s)
        self._drain()
        for ref in ready:
            self._complete(ref, allow_retry)

    def step(self) -> None:
        """Wait up to poll_s for completions; deliver events first, then completions (in that order, so a
        job's metrics are logged before its run is closed)."""
        self._collect(self.poll_s)

    def run(self, jobs: Iterable[JobSpec], on_tick: Callable[[], None] | None = None) -> None:
        """Run `jobs`; a job whose `after` is among them waits until that one ends (a job after one that is
        not here, e.g. finished in an earlier invocation, starts at once)."""
        jobs = list(jobs)
        here = {job.fingerprint for job in jobs}
        for job in jobs:
            if job.after in here:
                self._waiting.setdefault(job.after, []).append(job)
        for group in interleaved_groups([job for job in jobs if job.after not in here]):
            self._resubmit(group, 1)
        while self._pending:
            self.step()
            if on_tick is not None:
                on_tick()

    def cancel(self, grace_s: float = 10.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Cancel every pending attempt: a KeyboardInterrupt in running tasks, then (after grace_s, or as
        soon as `stop()`) a forced kill. Each attempt still gets its Completion (cancelled, or whatever it
        ended as); jobs held after another are cancelled without starting, even when that one finishes
        within the grace."""
        held = [job for jobs in self._waiting.values() for job in jobs]
        self._waiting.clear()
        for ref in list(self._pending):
            ray.cancel(ref, recursive=True)
        deadline = time.monotonic() + grace_s
        while self._pending and time.monotonic() < deadline and not stop():
            self._collect(0.2, allow_retry=False)
        for ref in list(self._pending):
            ray.cancel(ref, force=True, recursive=True)
            jobs, attempt = self._pending.pop(ref)
            for job in jobs:
                self.on_done(Completion(job.name, attempt, "cancelled", error="cancelled (forced)"))
        for job in held:  # never started
            self.on_done(Completion(job.name, 1, "cancelled", error="cancelled before it started"))
