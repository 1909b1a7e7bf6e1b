"""Failure classes key on exception types (no cluster needed)."""

from dataclasses import dataclass, replace
from types import SimpleNamespace

import pytest
import torch
from ray import exceptions as rex

from orchestrator.runs.driver import Driver, job_state
from orchestrator.runs.outcomes import (
    Completion,
    classify,
    halved_micro_batch,
    one_line,
    oom_retry,
    plain,
    summary,
)
from orchestrator.runs.scheduling import Scheduler
from orchestrator.runs.tracking import Tracker
from orchestrator.suites.expansion import load_suite
from orchestrator.suites.spec import JobSpec
from results import names


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


@pytest.mark.parametrize(
    "message",
    [
        "[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
        "to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)",
        "[enforce fail at alloc_cpu.cpp:89] data. DefaultCPUAllocator: not enough memory: you tried to "
        "allocate 1099511627776 bytes.",
        "C10 Out of Memory. Trying to allocate 1099511627776 bytes",
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB",
        "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
        "HIP out of memory. Tried to allocate 2.00 GiB",
        "HIP error: out of memory",
        "MPS backend out of memory (MPS allocated: 1.00 GB, other allocations: 2.00 GB, max allowed: 3 GB)",
        "XPU out of memory. Tried to allocate 2.00 GiB",
        "std::bad_alloc",
    ],
)
def test_every_torch_allocator_wording_is_oom(message):
    assert classify(task_error(RuntimeError(message))) == "oom"


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


def test_an_oom_says_what_ran_out_in_which_job_and_what_to_do():
    job, hint = "train/dense/debug/base/s0", "lower its batch_size or seq_len, or give it more memory"
    empty = summary(task_error(MemoryError()), "oom", job, "fail")  # Python's MemoryError has no message
    assert empty == (
        f"MemoryError: host memory ran out in job {job}; {hint} (resources: memory_gb), or set on_oom: "
        "halve_batch"
    )
    cuda = summary(task_error(torch.OutOfMemoryError("CUDA out of memory")), "oom", job, "halve_batch")
    assert cuda == f"OutOfMemoryError: CUDA out of memory: GPU memory ran out in job {job}; {hint} " \
        "(resources: memory_gb, num_gpus)"  # fmt: skip
    monitor = summary(rex.OutOfMemoryError("killed"), "oom", job, "halve_batch")
    assert "the node's memory ran out (Ray's memory monitor killed the worker) in job" in monitor
    assert summary(task_error(ValueError("bad")), "failed", job, "fail") == "ValueError: bad"
    assert summary(rex.TaskCancelledError(), "cancelled", job, "fail") == "cancelled"


def test_ansi_codes_are_stripped_from_errors():
    coloured = "\x1b[36mray::_task_body()\x1b[39m (pid=1)\n\x1b[1;31mValueError: bad\x1b[0m"
    assert plain(coloured) == "ray::_task_body() (pid=1)\nValueError: bad"
    assert one_line(RuntimeError(coloured)) == "RuntimeError: ValueError: bad"


def test_an_oom_halved_retry_is_recorded_as_what_it_ran(tmp_path):
    """The retry's MLflow run carries its real micro-batch and accumulation (params and fingerprint) and
    the suite's fingerprint as requested_fingerprint, under which a rerun finds the job finished."""
    path = tmp_path / "oom.yaml"
    path.write_text(
        "experiment: oom\nmatrix: {jobs: [train], families: [dense], presets: [debug]}\n"
        "train: {steps: 2, batch_size: 8, grad_accum: 2, data: {max_documents: 50}}\n"
    )
    suite = load_suite(path)
    (job,) = suite.jobs
    retry = oom_retry(job)
    assert (retry.config.batch_size, retry.config.grad_accum) == (4, 4)
    assert (retry.resolved["job"]["batch_size"], retry.resolved["job"]["grad_accum"]) == (4, 4)
    assert retry.fingerprint != job.fingerprint and retry.requested_fingerprint == job.fingerprint
    assert oom_retry(retry).requested_fingerprint == job.fingerprint  # halved twice: still the suite's
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_suite(suite.experiment, suite.name, {})
    report = SimpleNamespace(jobs={job.name: job_state(job)})
    driver = Driver(suite, tracker, parent, report)
    start = {"node": "n", "host": "h", "hw": "cpu"}
    driver.on_event(SimpleNamespace(job=job.name, attempt=1, kind="start", payload=start))
    driver.on_done(Completion(job.name, 1, "oom", error="oom", will_retry=True, retry_job=retry))
    driver.on_event(SimpleNamespace(job=job.name, attempt=2, kind="start", payload=start))
    driver.on_done(Completion(job.name, 2, "finished", result_json='{"metrics": {}}'))
    tracker.end_suite(parent, "FINISHED")
    runs = tracker.search(suite.experiment).set_index(names.tag_column(names.TAG_ATTEMPT))
    first, second = runs.loc["1"], runs.loc["2"]
    assert first[names.param_column("job.batch_size")] == "8" and first["status"] == "FAILED"
    assert second[names.param_column("job.batch_size")] == "4"
    assert second[names.param_column("job.grad_accum")] == "4"
    assert second[names.tag_column(names.TAG_FINGERPRINT)] == retry.fingerprint
    assert second[names.tag_column(names.TAG_REQUESTED_FINGERPRINT)] == job.fingerprint
    assert tracker.finished_fingerprints(suite.experiment)[job.fingerprint] == second["run_id"]


class HeldScheduler(Scheduler):
    """The scheduler's dependency bookkeeping without Ray: submissions and completions are recorded."""

    def __post_init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, job, attempt: int = 1) -> None:
        self.submitted.append(job.name)


def _jobs():
    train = JobSpec("train/l3", "train", None, {}, "fp-train", {})
    evaluate = JobSpec("eval/l3", "eval", None, {}, "fp-eval", {}, after="fp-train")
    later = JobSpec("eval2/l3", "eval", None, {}, "fp-later", {}, after="fp-eval")  # a chain
    done_before = JobSpec("eval/dense", "eval", None, {}, "fp-e2", {}, after="fp-finished-earlier")
    return train, evaluate, later, done_before


def test_a_dependent_job_waits_for_its_job_and_runs_after_it_finished():
    done: list[Completion] = []
    s = HeldScheduler("store", "ckpt", on_event=print, on_done=done.append)
    train, evaluate, later, done_before = _jobs()
    s.run([later, evaluate, train, done_before])
    assert s.submitted == ["train/l3", "eval/dense"]  # the train job's dependency ran in an earlier run
    s._release(train, Completion("train/l3", 1, "finished"))
    assert s.submitted[-1] == "eval/l3" and not done
    s._release(evaluate, Completion("eval/l3", 1, "finished"))
    assert s.submitted[-1] == "eval2/l3" and not s._waiting


@pytest.mark.parametrize("outcome", ["failed", "oom", "infra", "cancelled"])
def test_a_job_after_one_that_did_not_finish_is_cancelled_not_failed(outcome):
    done: list[Completion] = []
    s = HeldScheduler("store", "ckpt", on_event=print, on_done=done.append)
    train, evaluate, later, _ = _jobs()
    s.run([train, evaluate, later])
    s._release(train, Completion("train/l3", 2, outcome, error="boom"))
    assert [(d.job, d.outcome) for d in done] == [("eval/l3", "cancelled"), ("eval2/l3", "cancelled")]
    assert done[0].error == f"cancelled: train/l3 ended {outcome}" and not done[0].will_retry
    assert done[0].blocked  # recorded as a cancelled run (unlike a job Ctrl-C stopped before it started)
    assert s.submitted == ["train/l3"] and not s._waiting


def test_cancelling_cancels_the_held_jobs_without_starting_them():
    done: list[Completion] = []
    s = HeldScheduler("store", "ckpt", on_event=print, on_done=done.append)
    train, evaluate, _, _ = _jobs()
    s.run([train, evaluate])
    s.cancel(grace_s=0)
    assert [(d.job, d.outcome, d.blocked) for d in done] == [("eval/l3", "cancelled", False)]
    assert s.submitted == ["train/l3"]


class RecordingTracker:
    def __init__(self):
        self.started, self.finished = [], []

    def start_job(self, experiment, parent, job, attempt, tags):
        self.started.append(job.name)
        return f"run-{job.name}"

    def finish_job(self, run_id, fingerprint, experiment, done, step=0):
        self.finished.append((run_id, done.outcome, done.error))
        return "KILLED"


def test_a_blocked_eval_is_recorded_cancelled_and_a_never_started_one_is_not():
    from types import SimpleNamespace

    from orchestrator.runs.driver import Driver, JobState

    _, evaluate, later, _ = _jobs()
    suite = SimpleNamespace(name="s", experiment="e", jobs=(evaluate, later))
    states = {j.name: JobState(j.name, j.kind, {}) for j in (evaluate, later)}
    tracker = RecordingTracker()
    driver = Driver(suite, tracker, "parent", SimpleNamespace(jobs=states))
    driver.on_done(
        Completion("eval/l3", 1, "cancelled", error="cancelled: train/l3 ended failed", blocked=True)
    )
    driver.on_done(Completion("eval2/l3", 1, "cancelled", error="cancelled before it started"))
    assert tracker.finished == [("run-eval/l3", "cancelled", "cancelled: train/l3 ended failed")]
    assert states["eval/l3"].state == states["eval2/l3"].state == "cancelled"
    assert states["eval/l3"].error == "cancelled: train/l3 ended failed"
    assert states["eval2/l3"].run_id is None and states["eval2/l3"].error == "cancelled before it started"


def test_an_oom_halved_job_releases_its_dependents_and_keeps_its_checkpoints():
    done: list[Completion] = []
    s = HeldScheduler("store", "ckpt", on_event=print, on_done=done.append)
    train, evaluate, _, _ = _jobs()
    s.run([train, evaluate])
    halved = replace(train, fingerprint="fp-halved", requested_fingerprint="fp-train")  # what oom_retry makes
    assert s._attempt(halved, 2).checkpoint_dir == "ckpt/fp-train"  # resumes the same training
    s._release(halved, Completion("train/l3", 2, "finished"))
    assert s.submitted[-1] == "eval/l3" and not s._waiting
