"""workloads.jobs.floors: threads from the job's CPUs, the probe's metrics, floor fractions."""

import pytest
import torch

from workloads.jobs import floors
from workloads.models.accounting import count_params, decode_step_cost, prefill_cost
from workloads.models.config import ModelConfig
from workloads.probe import MachineProbe


def _probe() -> MachineProbe:
    return MachineProbe(device="cpu", threads=3, read_bytes_per_s=1e9,
                        gemm_flop_per_s={"2x4x8": 1e6, "6x4x8": 2e6}, load_avg_1m=0.5)  # fmt: skip


def test_threads_are_set_from_the_job_and_recorded():
    before = torch.get_num_threads()
    try:
        assert floors.set_threads(1) == 1 == torch.get_num_threads()
        assert floors.set_threads(None) == 1  # None keeps what is set
        with pytest.raises(ValueError, match="JobContext.threads must be >= 1, got 0"):
            floors.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_probe_metrics_and_floor_fraction():
    p = _probe()
    assert floors.probe_metrics(p) == {"probe/read_bytes_per_s": 1e9, "probe/gemm_flop_per_s": 2e6}
    # 1 MB at 1 GB/s = 1 ms; 4000 FLOPs at the 2x4x8 rate 1 MFLOP/s = 4 ms: floor 4 ms, measured 8 ms.
    assert floors.floor_frac(p, (1e6, 4000.0), 8e-3, (2, 4, 8)) == pytest.approx(0.5)


def test_infer_floor_fractions_per_batch_size():
    class Job:
        batch_sizes, prompt_len, gen_len = (2,), 3, 2

    cfg = ModelConfig(vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8)
    pc, p = count_params(cfg), _probe()
    measured = {"infer/decode_tokens_per_s/bs2": 1000.0, "infer/ttft_s/bs2": 0.01}
    got = floors.infer_floor_fracs(cfg, pc, 4, Job, measured, p)
    decode_floor = p.floor_s(*decode_step_cost(cfg, pc, 2, 3 + 1), 1e6)  # context prompt + gen / 2
    prefill_floor = p.floor_s(*prefill_cost(cfg, pc, 2, 3), 2e6)
    assert got["infer/decode_floor_frac/bs2"] == pytest.approx(decode_floor / (2 / 1000.0))
    assert got["infer/prefill_floor_frac/bs2"] == pytest.approx(prefill_floor / 0.01)
    assert got["infer/decode_floor_frac"] == got["infer/decode_floor_frac/bs2"]  # the largest batch
    assert floors.infer_floor_fracs(cfg, pc, 4, Job, {}, p) == {}  # stopped before any batch size


def test_moe_decode_floor_reads_at_the_rate_of_every_expert_not_one():
    from workloads.models.accounting import decode_working_set_bytes
    from workloads.models.config import MoEConfig

    class Job:
        batch_sizes, prompt_len, gen_len = (1,), 3, 2

    moe = MoEConfig(positions=(0,), num_experts=4, ffn_dim=8, top_k=1)
    cfg = ModelConfig(
        vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, family="moe", moe=moe
    )
    pc = count_params(cfg)
    step_bytes, _ = decode_step_cost(cfg, pc, 1, 3 + 1)
    working_set = decode_working_set_bytes(cfg, pc, 1, 3 + 1)
    assert working_set > step_bytes  # 3 experts the step does not read, but its neighbours do
    # a cache that holds one step's bytes (1 TB/s) but not the working set (1 GB/s): FLOPs are free here
    p = MachineProbe(device="cpu", threads=1, read_bytes_per_s=1e9, gemm_flop_per_s={"1x4x8": 1e18},
                     read_by_size={int(step_bytes): 1e12, int(working_set): 1e9})  # fmt: skip
    got = floors.infer_floor_fracs(
        cfg, pc, 4, Job, {"infer/decode_tokens_per_s/bs1": 1.0, "infer/ttft_s/bs1": 1.0}, p
    )
    assert got["infer/decode_floor_frac/bs1"] == pytest.approx(step_bytes / 1e9)  # 1 s per step measured
