"""`TrainJobConfig(preset, family)` with nothing else set runs, for every preset small enough for a CPU.

Defaults only: the built-in corpus, the BPE trained to the preset's vocabulary, the default seq_len and
batch size; the job is stopped after its first optimizer step through `JobContext.should_stop`, so that no
field has to change. `debug` runs in the default test run, the larger CPU preset (`tiny`) is slow.
"""

import math

import pytest

from workloads.jobs.result import JobContext
from workloads.jobs.train import TrainJobConfig, resolve, run
from workloads.models import presets
from workloads.models.accounting import count_params

CPU_TOTAL_PARAMS = 50e6  # the largest model (any family) a CPU test trains


def cpu_presets() -> list[str]:
    def largest(name: str) -> int:
        return max(count_params(presets.get(name, f)).total for f in ("dense", "l3", "moe"))

    return [name for name in presets.names() if largest(name) <= CPU_TOTAL_PARAMS]


def test_cpu_presets_are_debug_and_tiny():
    assert cpu_presets() == ["debug", "tiny"]


@pytest.mark.parametrize(
    "preset", [p if p == "debug" else pytest.param(p, marks=pytest.mark.slow) for p in cpu_presets()]
)
@pytest.mark.parametrize("family", ["dense", "l3", "moe"])
def test_defaults_run_a_step(preset, family, tmp_path_factory):
    cfg = TrainJobConfig(preset, family)
    assert resolve(cfg) == cfg  # the defaults fit the preset (window, BPE vocabulary): nothing refused
    polls = []
    ctx = JobContext(cache_dir=str(tmp_path_factory.getbasetemp() / "defaults-cache"),
                     should_stop=lambda: polls.append(1) or len(polls) > 1)  # fmt: skip
    result = run(cfg, ctx)
    assert int(result.info["steps_done"]) >= 1 and result.info["stopped_early"] == "true"
    vocab = presets.get(preset, family).vocab_size
    assert abs(result.metrics["train/loss"] - math.log(vocab)) < 0.5  # a fresh model: near uniform
