"""roofline.py: step time, tokens/s, cost and the decode/offload window, computed by hand."""

from dataclasses import replace

import pytest

from clusters import catalog, roofline
from clusters.shapes import InferSetup, L3Shape, ModelShape, TrainSetup
from orchestrator.suites.cluster_file import parse_cluster

H100 = catalog.get("h100-sxm")
# 1e9 parameters, all active, dense-only; 16 layers, 16 heads of 64; blocks: (dense - final norm) / 16.
MODEL = ModelShape("m", vocab_size=32000, dim=1024, n_layers=16, n_heads=16, n_kv_heads=16, ffn_dim=4096,
                   max_seq_len=2048, tie_embeddings=False, params_dense=1_000_000_000 - 65_536_000,
                   params_embeddings=65_536_000, params_active=1_000_000_000,
                   blocks=((58_403_936, 0, 0),) * 16, train_flops=(6e9, 12 * 16 * 16 * 64))  # fmt: skip
SETUP = TrainSetup(micro_batch=8, seq_len=2048, n_gpus=1, precision="amp-bf16")


def _cluster(gpus_per_node=8, nodes=1, link=None):
    node = {
        "count": nodes,
        "accelerator": "h100-sxm",
        "gpus_per_node": gpus_per_node,
        "cpus_per_node": 64,
        "memory_gib": 512,
    }
    raw = {"name": "c", "kind": "ray", "address": "auto", "nodes": [node]}
    if link:
        raw["interconnect_bytes_per_s"] = link
    return parse_cluster(raw)


def test_flops_per_token_is_palm():
    assert MODEL.train_flops_per_token(2048) == 6e9 + 12 * 16 * 16 * 64 * 2048


def test_compute_time_and_tokens_per_s():
    st = roofline.train_step_time(MODEL, SETUP, H100, mfu=0.5)
    flops = 6e9 + 12 * 16 * 16 * 64 * 2048
    assert st.compute_s == pytest.approx(8 * 2048 * flops / (989.5e12 * 0.5))
    assert st.comm_s == 0 and st.bound == "compute"
    assert st.tokens_per_s == pytest.approx(8 * 2048 / st.compute_s)
    ckpt = roofline.train_step_time(MODEL, replace(SETUP, activation_checkpointing=True), H100, mfu=0.5)
    assert ckpt.compute_s == pytest.approx(st.compute_s * 4 / 3)  # the forward runs twice
    fixed = roofline.train_step_time(MODEL, SETUP, H100, achieved_flops_per_s=1e14)
    assert fixed.compute_s == pytest.approx(8 * 2048 * flops / 1e14)


def test_memory_term():
    st = roofline.train_step_time(MODEL, replace(SETUP, precision="fp32"), catalog.get("h100-sxm"), mfu=0.5)
    from clusters import capacity

    acts = sum(capacity.activation_bytes(MODEL, replace(SETUP, precision="fp32")).values())
    # weights read twice + gradient read-modify-write (4·(2+2) B), AdamW 2·(4+4+8) B per param, acts 2×.
    expected = (1e9 * 16 + 2 * 1e9 * 16 + 2 * acts) / 3.35e12
    assert st.memory_s == pytest.approx(expected)


def test_ring_allreduce_over_nvlink_and_network():
    setup = replace(SETUP, n_gpus=8)
    st = roofline.train_step_time(MODEL, setup, H100, mfu=0.5, cluster=_cluster())
    assert st.comm_s == pytest.approx(2 * 7 / 8 * 4 * 1e9 / 450e9)  # fp32 grads, NVLink one direction
    st16 = roofline.train_step_time(MODEL, replace(SETUP, n_gpus=16), H100, mfu=0.5,
                                    cluster=_cluster(nodes=2, link=50e9))  # fmt: skip
    assert st16.comm_s == pytest.approx(2 * 15 / 16 * 4 * 1e9 / 50e9)
    assert st16.tokens_per_step == 16 * 8 * 2048
    with pytest.raises(ValueError, match="set interconnect_bytes_per_s"):
        roofline.train_step_time(
            MODEL, replace(SETUP, n_gpus=16), catalog.get("l40s"), cluster=_cluster(nodes=2)
        )


def test_train_cost():
    st = roofline.StepTime(compute_s=2.0, memory_s=1.0, comm_s=0.5, tokens_per_step=1000, flops_per_token=1,
                           flops_per_s=1)  # fmt: skip
    cost = roofline.train_cost(st, replace(SETUP, n_gpus=8), 10_500, price_per_gpu_hour=3.0)
    assert (cost.steps, cost.wall_s) == (11, 22.0)
    assert cost.gpu_hours == pytest.approx(22 / 3600 * 8)
    assert cost.dollars == pytest.approx(cost.gpu_hours * 3)
    assert roofline.train_cost(st, SETUP, 1000, None).dollars is None


def test_cpu_needs_calibration():
    with pytest.raises(ValueError, match="calibrate on measured runs"):
        roofline.train_step_time(MODEL, SETUP, catalog.get("cpu"))
    st = roofline.train_step_time(MODEL, SETUP, catalog.get("cpu"), achieved_flops_per_s=1e11)
    assert st.memory_s == 0 and st.compute_s > 0


def test_decode_is_memory_bound_and_offload_window():
    l3 = L3Shape(positions=(3, 9), rows=1_000_000, row_width=1536, d_emb=512, d_up=4096,
                 rows_per_token_mean=4.0, rows_per_token_max=512)  # fmt: skip
    model = replace(MODEL, l3=l3, params_l3_tables=2 * 1_000_000 * 1536)
    setup = InferSetup(batch=1, context_len=1024)
    t = roofline.decode_step(model, setup, H100)
    kv = 2 * 16 * 1024 * 1024 * 1 * 2
    rows = 2 * l3.rows * -__import__("math").expm1(-4.0 / l3.rows) * 1536
    weight_bytes = 2 * (model.params_dense + 32000 * 1024 + rows)
    assert t.step_s == pytest.approx((weight_bytes + kv) / 3.35e12)  # batch 1: memory-bound
    assert t.copy_s == 0 and t.hidden
    off = roofline.decode_step(model, replace(setup, l3_placement="offload"), H100)
    assert off.copy_s == pytest.approx(rows * 2 / 64e9)
    block_s = (2 * model.params_dense / 16 + kv / 16) / 3.35e12
    assert off.window_s == pytest.approx(4 * block_s)  # blocks 0..3 run before the first L3 layer
    assert off.hidden == (off.copy_s <= off.window_s)
    assert off.offload_step_s == pytest.approx(off.step_s + max(0.0, off.copy_s - off.window_s))
