"""The `tiny` preset learns: loss falls over 100 steps on the built-in corpus, for every family (slow)."""

import math
import statistics

import pytest

from workloads.data import DataConfig
from workloads.jobs.result import JobContext
from workloads.jobs.train import TrainJobConfig, run


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dense", "l3", "moe"])
def test_tiny_loss_falls_over_100_steps(family, tmp_path_factory):
    cache_dir = tmp_path_factory.getbasetemp() / "jobs-cache-tiny"
    losses: dict[int, float] = {}
    cfg = TrainJobConfig(
        preset="tiny", family=family, data=DataConfig(max_documents=400), seq_len=128, batch_size=8,
        steps=100, lr=1e-3, lr_warmup_steps=10, eval_batches=4,
    )  # fmt: skip
    ctx = JobContext(cache_dir=str(cache_dir), on_metrics=lambda m, s: losses.update(
        {s: m["train/loss"]} if "train/loss" in m else {}))  # fmt: skip
    result = run(cfg, ctx)
    curve = [losses[s] for s in range(100)]
    first, last = statistics.mean(curve[:5]), statistics.mean(curve[-5:])
    assert first > math.log(8192) - 0.5  # starts near uniform over the vocabulary
    assert last < first - 2.0, (first, last)
    assert result.metrics["eval/val_loss"] < first - 1.5
