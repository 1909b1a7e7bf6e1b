"""Predicted training memory vs real `workloads.jobs.train.run` jobs (debug/tiny presets).

CPU: parameter and optimizer bytes (mem/params_bytes/*, mem/optimizer_bytes) must match exactly (up to
AdamW's per-tensor step counters); the peak is the torch-profiler peak of CPU tensor allocations over the
whole job, less the machine probe's read buffer (up to 256 MB, not the job's; taken before the profiled
run) (mem/peak_host_bytes is RSS and not comparable, see test_clusters_validation.py).
GPU: mem/peak_device_bytes (torch.cuda.max_memory_allocated) vs the amp-bf16 prediction.
"""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from clusters.capacity import train_memory
from clusters.shapes import TrainSetup
from orchestrator.planning.plan import model_shape
from workloads.data import DataConfig
from workloads.jobs import floors
from workloads.jobs.result import JobContext
from workloads.jobs.setup import (
    prepare_job,
    token_freqs_for,
)
from workloads.jobs.spec import ModelOverrides
from workloads.jobs.train import TrainJobConfig, run

FAMILIES = ("dense", "l3", "moe")
VOCAB = 512  # debug's 256 ids cannot hold a byte-level BPE vocabulary


def _config(preset, family, batch, seq, device="cpu"):
    return TrainJobConfig(
        preset=preset, family=family, overrides=ModelOverrides(vocab_size=VOCAB),
        data=DataConfig(vocab_size=VOCAB, max_documents=200), batch_size=batch, seq_len=seq, steps=3,
        timing_warmup_steps=1, eval_batches=1, device=device,
    )  # fmt: skip


def _predicted(cfg: TrainJobConfig, cache: str, precision: str):
    """The prediction for the job's own model, L3 rows per token weighted by its corpus like the job."""
    job = prepare_job(cfg.model_spec(), None, cfg.data_config(), cache)  # matched on the job's corpus
    model_cfg = job.model
    shape = model_shape(
        model_cfg, token_freqs=token_freqs_for(model_cfg, job.data), l3_counts=job.counts or None
    )
    setup = TrainSetup(cfg.batch_size, cfg.data_config().seq_len, precision=precision, optimizer_impl="fused")
    return train_memory(shape, setup)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("isosparse-cache"))


@pytest.mark.slow
@pytest.mark.parametrize("preset,batch,seq", [("debug", 4, 64), ("tiny", 8, 128)])
@pytest.mark.parametrize("family", FAMILIES)
def test_cpu_train_job_memory(cache, preset, batch, seq, family, monkeypatch):
    cfg = _config(preset, family, batch, seq)
    run(cfg, JobContext(cache_dir=cache))  # tokenizer, token files, LZW counts: built once, outside
    machine = floors.job_probe(torch.device("cpu"), (1, 1, 1))  # its 256 MB buffer is not the job's
    monkeypatch.setattr(floors, "job_probe", lambda device, gemm: machine)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run(cfg, JobContext(cache_dir=cache))
    running = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    mem = _predicted(cfg, cache, "fp32")
    for category, predicted in mem.params_by_category.items():
        assert result.metrics[f"mem/params_bytes/{category}"] == predicted
    # AdamW's m and v exactly, plus a 4-byte step counter per parameter tensor.
    assert result.metrics["mem/optimizer_bytes"] == pytest.approx(mem.optimizer, rel=1e-3)
    assert result.metrics["mem/optimizer_bytes"] >= mem.optimizer
    print(f"{preset} {family}: profiled peak {peak:,} predicted {mem.peak:,.0f} ({mem.peak / peak - 1:+.1%})")
    assert abs(mem.peak / peak - 1) < 0.15


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_train_job_peak_device_bytes(cache, family):
    cfg = _config("tiny", family, 8, 256, device="cuda")
    result = run(cfg, JobContext(cache_dir=cache))
    measured = result.metrics["mem/peak_device_bytes"]
    mem = _predicted(cfg, cache, "amp-bf16")
    print(f"tiny {family} cuda: peak_device_bytes {measured:,.0f} predicted {mem.peak:,.0f}")
    assert abs(mem.peak / measured - 1) < 0.15
