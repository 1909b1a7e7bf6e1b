"""workloads.jobs.timing (StepTimer, benchmark, TimingStats), result (BenchResult, JobContext) and dummy."""

import math
import types
from pathlib import Path

import pytest
import torch

from workloads.jobs import dummy, timing
from workloads.jobs.result import BenchResult, JobContext, to_jsonable
from workloads.jobs.spec import ModelOverrides, ModelSpec
from workloads.jobs.timing import StepTimer, TimingStats, benchmark


def test_timing_stats_percentiles():
    stats = TimingStats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median_s, stats.mean_s, stats.n) == (3.0, 3.0, 5)
    assert stats.p10_s == pytest.approx(1.4) and stats.p90_s == pytest.approx(4.6)  # linear interpolation
    with pytest.raises(ValueError, match="no timed samples"):
        TimingStats.of([])


def test_step_timer_drops_the_warmup(monkeypatch):
    now = [0.0]  # a fake clock: each step lasts exactly what it says, however loaded the machine is
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    timer = StepTimer("cpu", warmup=2)
    for step_s in (0.5, 0.5, 0.125, 0.25, 0.125):
        with timer:
            now[0] += step_s
    assert timer.count == 5 and timer.samples_s() == [0.5, 0.5, 0.125, 0.25, 0.125]
    stats = timer.summary()
    assert (stats.n, stats.median_s) == (3, 0.125)  # the two slow warm-up samples are excluded
    with pytest.raises(ValueError, match="warmup"):
        StepTimer("cpu", warmup=-1)


def test_benchmark_runs_warmup_plus_repeats():
    calls = []
    stats = benchmark(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 7 and stats.n == 4
    with pytest.raises(ValueError, match="repeats"):
        benchmark(lambda: None, repeats=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_timer_uses_cuda_events():
    timer = StepTimer("cuda", warmup=1)
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(3):
        with timer:
            x @ x
    assert timer._events and timer.summary().median_s > 0


def test_bench_result_json_round_trip_and_nan_rejected():
    spec = ModelSpec("debug", "l3", ModelOverrides(vocab_size=512))
    result = BenchResult(kind="train", config=to_jsonable(spec), metrics={"train/loss": 1.5, "x": math.inf})
    assert BenchResult.from_json(result.to_json()) == result
    assert result.config["family"] == "l3" and result.config["overrides"]["vocab_size"] == 512
    with pytest.raises(ValueError, match="finite-or-inf"):
        BenchResult(kind="train", config={}, metrics={"train/loss": float("nan")})
    assert to_jsonable({"a": (1, Path("/x"))}) == {"a": [1, "/x"]}  # other types become strings


def test_job_context_defaults_and_callbacks():
    ctx = JobContext()
    ctx.log({"a": 1.0}, 0)  # no callback: a no-op
    assert not ctx.stop_requested()
    seen = []
    ctx = JobContext(on_metrics=lambda m, s: seen.append((s, m)), should_stop=lambda: True)
    ctx.log({"a": 2.0}, 3)
    assert seen == [(3, {"a": 2.0})] and ctx.stop_requested()


def test_dummy_job_streams_fails_stops_and_allocates():
    seen = []
    result = dummy.run(
        dummy.DummyJobConfig(steps=3, value=7.0), JobContext(on_metrics=lambda m, s: seen.append(s))
    )
    assert (
        seen == [0, 1, 2] and result.metrics["dummy/value"] == 7.0 and result.metrics["train/loss"] == 1 / 3
    )
    with pytest.raises(ValueError, match="dummy job failing on request at step 1"):
        dummy.run(dummy.DummyJobConfig(steps=3, fail_at_step=1, error="ValueError"))
    stopped = dummy.run(dummy.DummyJobConfig(steps=5), JobContext(should_stop=lambda: True))
    assert stopped.metrics["dummy/elapsed_s"] >= 0
    assert dummy.run(dummy.DummyJobConfig(steps=0, allocate_mb=1)).metrics["mem/ballast_bytes"] == 2**20
    with pytest.raises(ValueError, match="DummyJobConfig.error"):
        dummy.DummyJobConfig(error="KeyError")


def test_dummy_job_that_ignores_cancels_keeps_going(monkeypatch):
    def cancelled_sleep(_):  # what Ray's cancel of a running task raises in it
        raise KeyboardInterrupt

    monkeypatch.setattr(dummy.time, "sleep", cancelled_sleep)
    seen = []
    ctx = JobContext(on_metrics=lambda m, s: seen.append(s))
    assert dummy.run(dummy.DummyJobConfig(steps=3, ignore_cancel=True), ctx).metrics["dummy/value"] == 0.0
    with pytest.raises(KeyboardInterrupt):
        dummy.run(dummy.DummyJobConfig(steps=3), ctx)
