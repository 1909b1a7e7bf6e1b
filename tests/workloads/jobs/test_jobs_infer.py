"""Inference job: every family runs `debug` on CPU with every metric key; greedy KV-cache decoding equals
the argmax of full forwards; offloaded == on-device logits with the job's real (LZW) model; bad inputs.
"""

import math
from dataclasses import replace

import pytest
import torch

from workloads.data import DataConfig
from workloads.jobs import checkpoint, infer
from workloads.jobs.decode import greedy_generate
from workloads.jobs.infer import InferJobConfig, run
from workloads.jobs.result import JobContext
from workloads.jobs.setup import (
    build_model,
    prepare_job,
    resolve_model_config,
)
from workloads.jobs.spec import ModelOverrides
from workloads.l3.offload import offload_l3_tables

VS_DENSE = "infer/vs_dense/decode_tokens_per_s"
OVERRIDES = ModelOverrides(vocab_size=512)  # debug's 256 ids cannot hold a byte-level BPE vocabulary
BATCH_SIZES = (1, 4)
PER_BATCH = ("infer/prefill_tokens_per_s", "infer/ttft_s", "infer/decode_tokens_per_s")
OFFLOAD = ("infer/offload/prefill_tokens_per_s", "infer/offload/ttft_s", "infer/offload/decode_tokens_per_s")
# On CPU nothing crosses to a device: the offloaded L3 lookup reads the host tables in place, so no rows
# are copied and nothing is waited for (no h2d_*, host_compact_* or wait names).
OFFLOAD_EXTRA = ("infer/offload_decode_ratio",)
MOE_LB = (
    "lb/expert_tokens_max_over_mean",
    "lb/expert_tokens_cv",
    "lb/dropped_route_frac",
    "lb/dropped_token_frac",
    "lb/aux_loss",
)
JOB_LEVEL = (
    "mem/peak_host_bytes", "params_active", "params_total", "sparsity", "mem/params_bytes/dense",
    "params_active_max", "params_active_min",
    "mem/params_bytes/l3_tables", "mem/params_bytes/experts", "mem/params_bytes/embeddings",
    # the sweep's timed phase (workloads.jobs.contention; psutil is installed here)
    "timing/phase_start_s", "timing/phase_end_s", "timing/node_cpus", "timing/threads", "timing/load_avg_1m",
    "timing/other_cpu_cores",
)  # fmt: skip


@pytest.fixture(scope="session")
def data_cfg() -> DataConfig:
    return DataConfig(vocab_size=512, max_documents=50)


@pytest.fixture(scope="session")
def ctx(tmp_path_factory) -> JobContext:
    return JobContext(cache_dir=str(tmp_path_factory.mktemp("infer-cache")))


def _cfg(family: str, data_cfg: DataConfig, **kw) -> InferJobConfig:
    kw = {"batch_sizes": BATCH_SIZES, "prompt_len": 12, "gen_len": 3, "warmup": 0, "repeats": 1} | kw
    return InferJobConfig("debug", family, overrides=OVERRIDES, data=data_cfg, **kw)


FLOORS = ("infer/prefill_floor_frac", "infer/decode_floor_frac")  # per batch size (workloads.jobs.floors)
PROBE = ("probe/read_bytes_per_s", "probe/gemm_flop_per_s")


def _expected_keys(per_batch: tuple[str, ...]) -> set[str]:
    per_batch = (*per_batch, *FLOORS)
    return (
        set(per_batch) | {f"{k}/bs{b}" for k in per_batch for b in BATCH_SIZES} | set(JOB_LEVEL) | set(PROBE)
    )


@pytest.mark.parametrize(
    ("family", "per_batch"),
    [
        ("dense", PER_BATCH),
        ("l3", PER_BATCH + OFFLOAD + OFFLOAD_EXTRA),
        ("moe", PER_BATCH + MOE_LB),
        ("hash_moe", PER_BATCH + MOE_LB),
    ],
)
def test_every_family_returns_every_metric_key(family, per_batch, data_cfg, ctx):
    streamed = []
    job_ctx = replace(ctx, on_metrics=lambda metrics, step: streamed.append((step, metrics)))
    result = run(_cfg(family, data_cfg), job_ctx)
    assert set(result.metrics) - {"mem/offload/host_table_bytes"} == _expected_keys(per_batch)
    assert all(math.isfinite(v) and v >= 0 for v in result.metrics.values())
    for key in per_batch:
        assert result.metrics[key] == result.metrics[f"{key}/bs{max(BATCH_SIZES)}"]  # unsuffixed = largest B
    positive = [k for k in result.metrics if "tokens_per_s" in k or "ttft" in k or "compact_bytes" in k]
    assert all(result.metrics[k] > 0 for k in positive)
    assert [step for step, _ in streamed] == [0, 1]
    assert set(streamed[1][1]) == {f"{k}/bs4" for k in per_batch}
    assert result.kind == "infer" and result.info["family"] == family
    assert result.params["params_total"] == result.metrics["params_total"]
    assert result.config["model"]["family"] == family
    if family == "l3":
        assert result.metrics["mem/offload/host_table_bytes"] == result.metrics["mem/params_bytes/l3_tables"]
        assert result.info["placements"] == "device,host"
        assert not any("h2d" in k or "compact" in k or "wait" in k for k in result.metrics)
        m = result.metrics
        for bs in BATCH_SIZES:  # the ratio is offloaded over on-device, never the inverse
            want = m[f"infer/offload/decode_tokens_per_s/bs{bs}"] / m[f"infer/decode_tokens_per_s/bs{bs}"]
            assert m[f"infer/offload_decode_ratio/bs{bs}"] == pytest.approx(want, rel=1e-12)
    if family == "moe":
        assert 0 <= result.metrics["lb/dropped_token_frac"] <= result.metrics["lb/dropped_route_frac"] < 1
        assert result.metrics["lb/expert_tokens_max_over_mean"] >= 1
    if family == "hash_moe":  # routed by token id: nothing dropped, no aux loss
        assert result.metrics["lb/dropped_route_frac"] == 0 == result.metrics["lb/aux_loss"]


def test_interleaved_families_report_what_separate_runs_do(data_cfg, ctx):
    from workloads.jobs.infer import run_interleaved

    dense, l3 = run_interleaved([_cfg("dense", data_cfg), _cfg("l3", data_cfg)], [ctx, ctx])
    assert dense.info["family"] == "dense" and l3.info["family"] == "l3"
    # one process held both models: neither records a peak RSS of its own
    assert set(dense.metrics) == _expected_keys(PER_BATCH) - {"mem/peak_host_bytes"}
    ratio_keys = [VS_DENSE, VS_DENSE + "_p10", VS_DENSE + "_p90"]
    ratios = {f"{k}/bs{b}" for k in ratio_keys for b in BATCH_SIZES} | set(ratio_keys)  # + the largest bs
    assert set(l3.metrics) - {"mem/offload/host_table_bytes"} == (
        _expected_keys(PER_BATCH + OFFLOAD + OFFLOAD_EXTRA) - {"mem/peak_host_bytes"} | ratios
    )
    for bs in BATCH_SIZES:  # L3 over dense per round, both timed in this process (arithmetic: decode_timing)
        low, mid, high = (l3.metrics[f"{k}/bs{bs}"] for k in ratio_keys)
        assert 0 < low <= mid <= high
    assert dense.metrics["timing/phase_start_s"] == l3.metrics["timing/phase_start_s"]  # one timed phase
    with pytest.raises(ValueError, match="one sweep and distinct families"):
        run_interleaved([_cfg("dense", data_cfg), _cfg("dense", data_cfg)])
    with pytest.raises(ValueError, match="one sweep and distinct families"):
        run_interleaved([_cfg("dense", data_cfg), _cfg("l3", data_cfg, gen_len=4)])


def test_offload_only_placement_reports_offload_keys_only(data_cfg, ctx):
    result = run(_cfg("l3", data_cfg, l3_placement="offload", batch_sizes=(2,)), ctx)
    assert "infer/offload/decode_tokens_per_s/bs2" in result.metrics
    assert not any(
        k.startswith(("infer/decode", "infer/prefill", "infer/offload_decode_ratio")) for k in result.metrics
    )


def _job_model(family: str, data_cfg: DataConfig, ctx: JobContext):
    cfg = _cfg(family, data_cfg)
    specialize = lambda m: infer.resolve(cfg, cuda=False, model=m).model  # noqa: E731
    job = prepare_job(
        cfg.model_spec(), None, replace(data_cfg, seq_len=cfg.prompt_len), ctx.cache_dir, specialize
    )
    return build_model(job.model, job.counts, "cpu", seed=0).eval(), infer._prompts(job.data, cfg)


@pytest.mark.parametrize("family", ["dense", "l3"])
def test_greedy_decode_with_cache_equals_argmax_of_full_forward(family, data_cfg, ctx):
    model, prompts = _job_model(family, data_cfg, ctx)
    prompts = prompts[:3]
    tokens = greedy_generate(model, prompts, gen_len=5)  # (3, 5)
    seq = prompts
    with torch.no_grad():
        for t in range(5):
            nxt = model(seq)[0][:, -1].argmax(-1)  # (3,): full forward, no cache
            assert torch.equal(tokens[:, t], nxt), f"step {t}"
            seq = torch.cat([seq, nxt[:, None]], dim=1)


@pytest.mark.parametrize("compact", [True, None], ids=["compacted", "default"])
def test_offloaded_generation_equals_device_generation_with_lzw_counts(data_cfg, ctx, compact):
    model, prompts = _job_model("l3", data_cfg, ctx)
    logits = []
    hook = model.register_forward_hook(lambda m, args, out: logits.append(out[0]))
    device_tokens = greedy_generate(model, prompts[:4], gen_len=4)
    handle = offload_l3_tables(model, compact=compact)
    offload_tokens = greedy_generate(model, prompts[:4], gen_len=4)
    hook.remove()
    assert torch.equal(device_tokens, offload_tokens)
    assert all(torch.equal(a, b) for a, b in zip(logits[:4], logits[4:], strict=True))
    if compact:
        assert handle.stats.steps == 4 and handle.stats.bytes_copied > 0
    else:  # CPU default: read in place
        assert handle.stats.steps == 0 and handle.stats.bytes_copied == 0
    handle.remove()


def test_checkpoint_weights_are_loaded(data_cfg, ctx, tmp_path):
    model, _ = _job_model("dense", data_cfg, ctx)
    other = build_model(model.config, None, "cpu", seed=1)
    torch.save({"model": other.state_dict(), "step": 3}, tmp_path / "weights.pt")
    checkpoint.load_weights(model, str(tmp_path / "weights.pt"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a file"):
        checkpoint.load_weights(model, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no complete step"):
        checkpoint.load_weights(model, str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "tinny"}, "unknown preset 'tinny'; did you mean 'tiny'"),
        ({"family": "sparse"}, "InferJobConfig.family must be one of"),
        ({"batch_sizes": (1, 0)}, r"InferJobConfig.batch_sizes must be >= 1, got \(1, 0\)"),
        ({"batch_sizes": ()}, r"batch_sizes must hold at least 1 item\(s\)"),
        ({"batch_sizes": (2, 2)}, "batch_sizes has repeats"),
        ({"prompt_len": 200, "gen_len": 57}, r"prompt_len \+ gen_len = 200 \+ 57 exceeds .* max_seq_len=256"),
        ({"gen_len": 1}, "InferJobConfig.gen_len must be >= 2, got 1"),
        ({"repeats": 0}, "InferJobConfig.repeats must be >= 1, got 0"),
        ({"l3_placement": "host"}, "InferJobConfig.l3_placement must be one of"),
        ({"family": "dense", "l3_placement": "offload"}, "l3_placement: 'offload' needs an L3 model"),
        ({"dtype": "int8"}, "InferJobConfig.dtype must be one of 'auto'"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda"),
        ({"family": "moe", "overrides": ModelOverrides(vocab_size=512, moe_ep_size=2)}, "moe_ep_size: 2"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, message, data_cfg):
    """Bounds fail at construction; what needs the model (lengths, placement, ep) at `resolve`."""
    args = {"preset": "debug", "family": "l3", "overrides": OVERRIDES, "data": data_cfg} | kwargs
    with pytest.raises(ValueError, match=message):
        infer.resolve(InferJobConfig(**args), cuda=False)


def test_resolve_fixes_device_dtype_and_moe_capacity_once(data_cfg):
    """The infer job's own changes to the model (dtype, top-1 MoE min_capacity) happen in `resolve`, so the
    orchestrator fingerprints them; a resolved config is run as it is."""
    job = _cfg("moe", data_cfg, batch_sizes=(2, 8))
    model = resolve_model_config(job.model_spec())
    assert (model.dtype, model.moe.top_k, model.moe.min_capacity) == ("float32", 1, 4)
    cfg = infer.resolve(job, cuda=False, model=model)
    assert (cfg.device, cfg.dtype, cfg.model.dtype, cfg.model.moe.min_capacity) == (
        "cpu",
        "float32",
        "float32",
        2,
    )
    assert infer.resolve(cfg, cuda=True) is cfg
    gpu = infer.resolve(job, cuda=True, model=model)
    assert (gpu.device, gpu.dtype, gpu.model.dtype) == ("cuda", "bfloat16", "bfloat16")
    assert infer.resolve(job, cuda=False).model is None  # the job resolves it on its own data


def test_batch_larger_than_the_data_fails_before_timing(data_cfg, ctx):
    cfg = _cfg("dense", data_cfg, batch_sizes=(100_000,), prompt_len=12)
    with pytest.raises(ValueError, match="batch_sizes: batch size 100000 needs 100000 prompts"):
        run(cfg, ctx)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_device_without_cuda_is_an_error(data_cfg, ctx):
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        run(_cfg("dense", data_cfg, device="cuda"), ctx)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_offloaded_decode_keeps_98_percent_of_device_decode():
    """The issue's goal (L3_SPEC §4): offloaded / on-device decode tokens/s ≥ 0.98 on a GPU."""
    cfg = InferJobConfig("tiny", "l3", batch_sizes=(1, 8, 64), device="cuda", warmup=2, repeats=5)
    metrics = run(cfg).metrics  # the default cache: the builtin corpus and its tokenizer
    ratios = {b: metrics[f"infer/offload_decode_ratio/bs{b}"] for b in cfg.batch_sizes}
    assert all(r >= 0.98 for r in ratios.values()), ratios
    assert metrics["mem/offload/peak_device_bytes"] < metrics["mem/peak_device_bytes"]
