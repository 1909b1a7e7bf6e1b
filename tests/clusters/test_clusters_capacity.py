"""capacity.py on small models computed by hand (numbers in the comments)."""

import math
from dataclasses import replace

import pytest

from clusters import capacity
from clusters.shapes import InferSetup, L3Shape, ModelShape, MoEShape, TrainSetup

# D=8, 2 heads of 4, 1 kv head (Dkv=4), F=16, V=32, 2 blocks, untied embeddings.
# Block: wq+wo 2·64, wk+wv 2·32, 2 norms 16, SwiGLU 3·8·16=384 -> 592; dense = 2·592 + final norm 8 = 1192.
TOY = ModelShape("toy", vocab_size=32, dim=8, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=16,
                 max_seq_len=64, tie_embeddings=False, params_dense=1192, params_embeddings=512,
                 params_active=1456, blocks=((592, 0, 0),) * 2,
                 train_flops=(6 * 1456, 12 * 2 * 2 * 4))  # fmt: skip
FP32 = TrainSetup(micro_batch=1, seq_len=4, precision="fp32", optimizer_impl="fused")


def _moe_toy() -> ModelShape:
    # Block 1 is MoE: 4 experts of 3·8·8 = 192 -> 768 expert params; router 8·4 = 32 replaces the 384 MLP.
    moe = MoEShape(positions=(1,), num_experts=4, top_k=1, ffn_dim=8)
    return replace(
        TOY, moe=moe, params_dense=592 + 240 + 8, params_experts=768, blocks=((592, 0, 0), (240, 768, 0))
    )


def test_a_shape_without_counts_from_accounting_is_refused():
    with pytest.raises(ValueError, match="model.blocks"):
        replace(TOY, blocks=((592, 0, 0),))
    with pytest.raises(ValueError, match="model.train_flops"):
        replace(TOY, train_flops=(0.0, 0.0))


def test_block_activation_bytes_by_hand():
    # fp32 (a = r = 4): 4·(9D + 2Dkv + 4F + H + 2) = 4·(72 + 8 + 64 + 2 + 2) = 592 bytes per token.
    assert capacity.block_bytes_per_token(TOY, FP32, moe=False) == 592
    # amp-bf16 (a=2, r=4): attention 68 (norm) + 48 (3 cast copies) + 32 (q,k,v) + 8 (lse) + 32 (out, wo in)
    # = 188; MLP 68 + 32 (2 cast copies) + 128 (4F·2) = 228.
    amp = replace(FP32, precision="amp-bf16")
    assert capacity.block_bytes_per_token(TOY, amp, moe=False) == 188 + 228
    # math attention adds the scores and softmax output: 2·H·s·a = 2·2·4·4 = 64 per token.
    assert capacity.block_bytes_per_token(TOY, replace(FP32, attention="math"), moe=False) == 592 + 64


def test_activations_and_checkpointing():
    acts = capacity.activation_bytes(TOY, FP32)
    # head per token: final norm 68 + lm_head input 32 + log-probs 4·32 + two int64 ids 16 = 244.
    assert acts == {"blocks": 2 * 4 * 592, "l3": 0.0, "head": 4 * 244}
    ckpt = capacity.activation_bytes(TOY, replace(FP32, activation_checkpointing=True))
    assert ckpt["blocks"] == 4 * 2 * (8 * 4 + 8)  # only each block's input (and ids) is kept


def test_training_states_ddp_zero1_zero2():
    # 1704 parameters; fp32 AdamW: 4 + 4 + 8 bytes each.
    m = capacity.train_memory(TOY, FP32)
    assert (m.params, m.grads, m.optimizer, m.comm_buffers) == (6816, 6816, 13632, 0)
    ddp4 = capacity.train_memory(TOY, replace(FP32, n_gpus=4))
    assert (ddp4.optimizer, ddp4.comm_buffers) == (13632, 6816)  # DDP buckets: a second gradient copy
    z1 = capacity.train_memory(TOY, replace(FP32, n_gpus=4, zero_stage=1))
    assert (z1.grads, z1.optimizer) == (6816, 13632 / 4)
    z2 = capacity.train_memory(TOY, replace(FP32, n_gpus=4, zero_stage=2))
    assert (z2.grads, z2.optimizer) == (6816 / 4, 13632 / 4)
    bf16 = capacity.train_memory(TOY, replace(FP32, precision="bf16-master"))
    assert (bf16.params, bf16.grads, bf16.optimizer, bf16.weight_copies) == (2 * 1704, 2 * 1704, 12 * 1704, 0)
    amp = capacity.train_memory(TOY, replace(FP32, precision="amp-bf16"))
    assert amp.weight_copies == 2 * (1192 + 32 * 8)  # bf16 casts of the matmul weights and the LM head


def test_expert_parallelism_splits_experts():
    moe = _moe_toy()
    setup = replace(FP32, n_gpus=2, ep_size=2, zero_stage=1)
    m = capacity.train_memory(moe, setup)
    # replicated 840 + 512 = 1352; 768 experts over ep 2 -> 384 per GPU; expert data-parallel group = 1.
    assert m.params == 4 * (1352 + 384)
    assert m.optimizer == 8 * (1352 / 2 + 384 / 1)
    assert m.params_by_category["experts"] == 4 * 384


def test_backward_peak_by_hand():
    # S=4. Activations: blocks 2·4·592 = 4736, head 976. Loss backward: 12·V·S = 1536 beyond the log-probs.
    # Sweep at block 1: acts 4736 + grads (head 4·(256+8) = 1056, block 1 4·592) 3424 + logits 4·4·32 = 512
    # = 8672; at block 0 the same (2368 + 5792 + 512). Embedding gradient last: 5792 + 1024 + 512 = 7328.
    m = capacity.train_memory(TOY, FP32)
    assert m.backward_live == 8672
    assert m.forward_backward == 6816 + 13632 + 8672
    assert m.optimizer_step == 6816 + 6816 + 13632  # fused AdamW: no temporaries
    assert m.peak == 29120
    # for-loop AdamW: 3 temporaries of the largest tensor (the 32×8 embedding) -> 3·4·256.
    assert capacity.train_memory(TOY, replace(FP32, optimizer_impl="for-loop")).optimizer_temp == 3072
    assert capacity.train_memory(TOY, replace(FP32, optimizer_impl="foreach")).optimizer_temp == 4 * 1704


def test_grad_accumulation_keeps_all_gradients():
    m1 = capacity.train_memory(TOY, FP32)
    m2 = capacity.train_memory(TOY, replace(FP32, grad_accum=2))
    # every gradient (6816) exists during the loss backward: 4736 + 976 + 1536 + 6816 = 14064.
    assert m2.backward_live == 14064 > m1.backward_live


def test_min_gpus_and_max_micro_batch():
    z2 = replace(FP32, zero_stage=2, micro_batch=2)
    peaks = [capacity.train_memory(TOY, replace(z2, n_gpus=n)).peak for n in range(1, 6)]
    assert peaks == sorted(peaks, reverse=True)
    assert capacity.min_gpus(TOY, z2, peaks[2], max_gpus=8) == 3
    assert capacity.min_gpus(TOY, z2, peaks[4] - 1, max_gpus=5) is None
    ddp = replace(FP32, micro_batch=2)
    assert capacity.min_gpus(TOY, ddp, peaks[0], max_gpus=8) == 1
    cap = capacity.train_memory(TOY, replace(FP32, micro_batch=7)).peak
    assert capacity.max_micro_batch(TOY, FP32, cap) == 7
    assert capacity.max_micro_batch(TOY, FP32, cap - 1) == 6
    assert capacity.max_micro_batch(TOY, FP32, 1000) == 0


def test_usable_bytes():
    from clusters import catalog

    assert capacity.usable_bytes(catalog.get("h100-sxm")) == 0.9 * 80 * 2**30
    assert capacity.usable_bytes(catalog.get("cpu"), 0.5, memory_bytes=100) == 50
    with pytest.raises(ValueError, match="has no memory size"):
        capacity.usable_bytes(catalog.get("cpu"))


L3 = L3Shape(
    positions=(0,), rows=64, row_width=12, d_emb=4, d_up=16, rows_per_token_mean=2.0, rows_per_token_max=8
)


def test_l3_unique_rows():
    toy = replace(TOY, l3=L3, params_l3_tables=64 * 12)
    assert capacity.l3_unique_rows(toy, 1e-6) == pytest.approx(2e-6)  # no repeats: tokens · mean rows
    assert capacity.l3_unique_rows(toy, 1e6) == pytest.approx(64)  # saturates at the table
    assert capacity.l3_unique_rows(toy, 32) == pytest.approx(64 * (1 - math.exp(-1)))


def test_inference_memory_and_offload():
    setup = InferSetup(batch=3, context_len=10, prompt_len=6)
    mem = capacity.infer_memory(TOY, setup)
    assert mem.kv_cache == 2 * 2 * 4 * 10 * 3 * 2  # 2 (K, V) · layers · Dkv · context · batch · bf16
    assert mem.weights == 2 * 1704
    assert mem.activations == 3 * 6 * (32 + 3 * 16 + 4 * 8 + 2 * 4) * 2
    toy = replace(TOY, l3=L3, params_l3_tables=64 * 12, params_dense=1192 + 500)
    on_device = capacity.infer_memory(toy, setup)
    assert (on_device.l3_tables_device, on_device.l3_tables_host, on_device.l3_bytes_per_step) == (1536, 0, 0)
    off = capacity.infer_memory(toy, replace(setup, l3_placement="offload"))
    assert (off.l3_tables_device, off.l3_tables_host) == (0, 1536)
    assert off.device_total == on_device.device_total - 1536
    assert off.l3_bytes_per_step == pytest.approx(64 * (1 - math.exp(-3 * 2 / 64)) * 12 * 2)


def test_setup_validation():
    with pytest.raises(ValueError, match="train.zero_stage must be 0"):
        TrainSetup(1, 4, zero_stage=3)
    with pytest.raises(ValueError, match="n_gpus=3 is not divisible by train.ep_size=2"):
        TrainSetup(1, 4, n_gpus=3, ep_size=2)
    with pytest.raises(ValueError, match="train.micro_batch must be > 0"):
        TrainSetup(0, 4)
    with pytest.raises(ValueError, match="params_l3_tables > 0 exactly when"):
        replace(TOY, l3=L3)
    with pytest.raises(ValueError, match="infer.prompt_len"):
        InferSetup(1, 4, prompt_len=5)
