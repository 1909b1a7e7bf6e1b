"""Memory per GPU for training and inference, from a `ModelShape` and a setup (pure arithmetic, bytes).
Details: docs/clusters.md#clusterscapacity."""

import math
from dataclasses import asdict, dataclass, replace

from clusters.catalog import Accelerator
from clusters.shapes import InferSetup, ModelShape, TrainSetup

GIB = 1 << 30
# Sorted L3 lookup pads each (queries × rows) group to half-octave sizes: < 1.5x per axis, 1.29x of the
# exact pairs on the built-in corpus (workloads/kernels/l3_lookup/sorted.py); we use that for rows too.
L3_PAD_FACTOR = 1.29
DEEPSPEED_REDUCE_BUCKET = 500_000_000  # elements, DeepSpeed's default reduce_bucket_size
DEFAULT_HEADROOM = 0.9  # fraction of device memory a job may plan to use (allocator, CUDA/NCCL context)

# (param, grad, optimizer state) bytes per parameter.
STATE_BYTES: dict[str, tuple[int, int, int]] = {
    "fp32": (4, 4, 8),
    "amp-bf16": (4, 4, 8),
    "bf16-master": (2, 2, 12),
}


def _dtype_bytes(setup: TrainSetup) -> tuple[int, int]:
    """(a, r): compute (activation) bytes and residual-stream bytes."""
    return {"fp32": (4, 4), "amp-bf16": (2, 4), "bf16-master": (2, 2)}[setup.precision]


def l3_unique_rows(model: ModelShape, tokens: float) -> float:
    """Expected distinct table rows one L3 layer gathers for `tokens` positions.

    Each of the `rows` rows is touched with probability 1 - exp(-tokens · mean_rows / rows): exact for
    uniform token frequencies and allocation, → tokens·mean_rows (no repeats) for few tokens, → rows.
    """
    l3 = model.l3
    return l3.rows * -math.expm1(-tokens * l3.rows_per_token_mean / l3.rows)


def moe_slots(model: ModelShape, tokens: int) -> int:
    """Expert slots E·C of one MoE layer: C = max(ceil(tokens/E · top_k · cf), min_capacity) (DeepSpeed)."""
    moe = model.moe
    capacity = max(math.ceil(tokens / moe.num_experts * moe.top_k * moe.capacity_factor), moe.min_capacity)
    return moe.num_experts * capacity


def _norm(width: int, r: int) -> int:
    return 2 * width * r + 4


def block_bytes_per_token(model: ModelShape, setup: TrainSetup, *, moe: bool) -> float:
    """Saved bytes per token of one decoder block (attention + dense MLP, or the MoE MLP's gate part)."""
    a, r = _dtype_bytes(setup)
    D, amp = model.dim, setup.precision == "amp-bf16"
    attn = (
        _norm(D, r) + D * a * (3 if amp else 1) + (D + 2 * model.kv_dim) * a + 4 * model.n_heads + 2 * D * a
    )
    if setup.attention == "math":
        attn += 2 * model.n_heads * setup.seq_len * a
    if moe:
        # Gate input, logits/softmax/masks (~13 B per expert), 4 fp32 vectors; top-k outputs combined back.
        k = model.moe.top_k
        mlp = _norm(D, r) + D * a + 13 * model.moe.num_experts + 16 + k * (12 + D * a)
    else:
        mlp = _norm(D, r) + D * a * (2 if amp else 1) + 4 * model.ffn_dim * a
    return attn + mlp


def l3_bytes_per_token(model: ModelShape, setup: TrainSetup) -> float:
    """Saved bytes per token of one L3 sublayer, without the per-step gathered rows."""
    a, r = _dtype_bytes(setup)
    l3, D = model.l3, model.dim
    rows = L3_PAD_FACTOR * l3.rows_per_token_mean
    return (
        _norm(D, r)
        + _norm(l3.d_up, r)
        + D * a * L3_PAD_FACTOR
        + l3.d_emb * a
        + (l3.d_up + D) * a
        + rows * (4 + a + 1)
        + 2 * 8  # softmax out, weights, mask; two int64 position vectors
    )


def _block_activations(model: ModelShape, setup: TrainSetup) -> list[float]:
    """Saved bytes of each block (its L3 sublayer included) for one micro-batch, without checkpointing."""
    a, _ = _dtype_bytes(setup)
    S = setup.tokens_per_micro_batch
    dense = S * block_bytes_per_token(model, setup, moe=False)
    out = []
    for i in range(model.n_layers):
        if model.moe and i in model.moe.positions:
            # After the all-to-all each GPU runs its E/ep experts over ep·C slots each: E·C slots in all.
            slot = (model.dim + 4 * model.moe.ffn_dim) * a + 8
            act = S * block_bytes_per_token(model, setup, moe=True) + moe_slots(model, S) * slot
        else:
            act = dense
        if model.l3 and i in model.l3.positions:
            gathered = L3_PAD_FACTOR * l3_unique_rows(model, S) * (model.l3.row_width * a + 8)  # + row ids
            act += S * l3_bytes_per_token(model, setup) + gathered
        out.append(act)
    return out


def _head_activations(model: ModelShape, setup: TrainSetup) -> float:
    """Final norm, lm_head input, log-softmax output and the token ids (embedding, loss target)."""
    a, r = _dtype_bytes(setup)
    return setup.tokens_per_micro_batch * (_norm(model.dim, r) + model.dim * a + 4 * model.vocab_size + 2 * 8)


def activation_bytes(model: ModelShape, setup: TrainSetup) -> dict[str, float]:
    """Saved-for-backward bytes of one micro-batch on one GPU after the forward, by part: blocks (with
    their MoE experts) and L3 sublayers, head. With checkpointing only the block inputs remain."""
    S = setup.tokens_per_micro_batch
    if setup.activation_checkpointing:
        kept = S * model.n_layers * (model.dim * _dtype_bytes(setup)[1] + 8)
        return {"blocks": kept, "l3": 0.0, "head": _head_activations(model, setup)}
    no_l3 = replace(model, l3=None, params_l3_tables=0)
    blocks = sum(_block_activations(no_l3, setup))
    return {
        "blocks": blocks,
        "l3": sum(_block_activations(model, setup)) - blocks,
        "head": _head_activations(model, setup),
    }


def _backward_peak(model: ModelShape, setup: TrainSetup, g_dense: float, g_expert: float) -> float:
    """Most bytes of activations + gradients alive at once during one forward/backward (beyond the states).

    g_dense / g_expert: gradient bytes per local parameter (ZeRO-2 shards included). Backward runs from the
    head down: at block i the activations of blocks <= i are still saved and the gradients of blocks >= i
    (and of the head) exist; with grad_accum > 1 every gradient exists from the start. The loss backward
    holds the logits (a), the log-probs (4, a head activation), the log-probs' gradient (4) and the logits'
    gradient (4, + a bf16 copy under autocast): 16·V bytes per token in all. The loop keeps `logits`
    referenced through the backward. Checkpointing keeps block inputs and recomputes block i for its backward.
    """
    a, r = _dtype_bytes(setup)
    S, V = setup.tokens_per_micro_batch, model.vocab_size
    acts = _block_activations(model, setup)
    kept = [S * (model.dim * r + 8)] * model.n_layers if setup.activation_checkpointing else acts
    block_grads = []
    for i in range(model.n_layers):
        dense, experts, tables = model.blocks[i]
        block_grads.append(g_dense * (dense + tables) + g_expert * experts / setup.ep_size)
    head_grads = g_dense * (model.params_lm_head + model.dim)  # lm_head (the embedding when tied), norm
    embedding_grads = 0.0 if model.tie_embeddings else g_dense * V * model.dim  # dense, computed last
    accumulated = setup.grad_accum > 1
    grads = head_grads + sum(block_grads) + embedding_grads if accumulated else 0.0
    logits_held = a * S * V
    loss_work = S * V * (a + 4 + 4 + (a if a != 4 else 0))
    peak = sum(kept) + _head_activations(model, setup) + loss_work + grads
    grads = grads if accumulated else head_grads
    below = sum(kept)
    for i in reversed(range(model.n_layers)):
        grads += 0.0 if accumulated else block_grads[i]
        # Block i's backward needs its activations (recomputed when checkpointed). A DeepSpeed-MoE block's
        # backward also holds gradient buffers about as large as its activations (measured on CPU: the
        # dispatch/combine einsums and expert chunks); a dense block's are small enough to ignore.
        recompute = acts[i] if setup.activation_checkpointing else 0.0
        transient = acts[i] if model.moe and i in model.moe.positions else 0.0
        peak = max(peak, below + recompute + transient + grads + logits_held)
        below -= kept[i]
    return max(peak, grads + (0.0 if accumulated else embedding_grads) + logits_held)


@dataclass(frozen=True)
class TrainMemory:
    """Bytes per GPU. peak = max(forward/backward phase, optimizer-step phase)."""

    params: float
    grads: float
    optimizer: float
    comm_buffers: float  # DDP buckets (a second gradient copy) or a DeepSpeed reduce bucket
    weight_copies: float  # autocast's bf16 casts of the matmul weights (amp-bf16)
    activations: float  # saved for backward after the forward (activation_bytes)
    backward_live: float  # activations + gradients + loss working set at the worst point of backward
    optimizer_temp: float  # AdamW's temporaries (TrainSetup.optimizer_impl)
    params_by_category: dict[str, float]
    forward_backward: float
    optimizer_step: float

    @property
    def peak(self) -> float:
        return max(self.forward_backward, self.optimizer_step)

    def as_dict(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if k != "params_by_category"}
        return {**out, "peak": self.peak}


def _local_params(model: ModelShape, setup: TrainSetup) -> tuple[float, float]:
    """(replicated, expert) parameters held on one GPU."""
    replicated = model.params_dense + model.params_embeddings + model.params_l3_tables
    replicated += model.params_fgram_model  # SCONE's A_fgram trains with the model (its activations: ≤ K
    return replicated, model.params_experts / setup.ep_size  # tokens per distinct f-gram, not modelled)


def _optimizer_temp(model: ModelShape, setup: TrainSetup, local_sharded: float) -> float:
    if setup.optimizer_impl == "fused":
        return 0.0
    if setup.optimizer_impl == "foreach":
        return 4.0 * local_sharded  # _foreach_sqrt of every exp_avg_sq
    # One tensor at a time: sqrt and the divided denominator of tensor i, the previous denominator.
    return 3 * 4.0 * model.largest_param()


def train_memory(model: ModelShape, setup: TrainSetup) -> TrainMemory:
    """Training memory per GPU under DDP / ZeRO-1 / ZeRO-2 with expert parallelism (module docstring)."""
    p_b, g_b, o_b = STATE_BYTES[setup.precision]
    replicated, experts = _local_params(model, setup)
    dp, expert_dp = setup.n_gpus, setup.n_gpus // setup.ep_size
    grad_div = (dp, expert_dp) if setup.zero_stage >= 2 else (1, 1)
    opt_div = (dp, expert_dp) if setup.zero_stage >= 1 else (1, 1)
    grads = g_b * (replicated / grad_div[0] + experts / grad_div[1])
    optimizer = o_b * (replicated / opt_div[0] + experts / opt_div[1])
    comm = 0.0
    if dp > 1:
        comm = g_b * replicated if setup.zero_stage == 0 else g_b * min(replicated, DEEPSPEED_REDUCE_BUCKET)
    copies = 0.0
    if setup.precision == "amp-bf16":
        copies = 2.0 * (model.params_dense + experts + model.params_lm_head)
    params = p_b * (replicated + experts)
    live = _backward_peak(model, setup, g_b / grad_div[0], g_b / grad_div[1])
    opt_temp = _optimizer_temp(model, setup, replicated / opt_div[0] + experts / opt_div[1])
    by_cat = {
        "dense": p_b * model.params_dense,
        "embeddings": p_b * model.params_embeddings,
        "l3_tables": p_b * model.params_l3_tables,
        "experts": p_b * experts,
    }
    if model.params_fgram_model:
        by_cat["fgram_model"] = p_b * model.params_fgram_model
    return TrainMemory(
        params=params,
        grads=grads,
        optimizer=optimizer,
        comm_buffers=comm,
        weight_copies=copies,
        activations=sum(activation_bytes(model, setup).values()),
        backward_live=live,
        optimizer_temp=opt_temp,
        params_by_category=by_cat,
        forward_backward=params + optimizer + comm + copies + live,
        optimizer_step=params + grads + optimizer + comm + opt_temp,
    )


def usable_bytes(
    acc: Accelerator, headroom: float = DEFAULT_HEADROOM, memory_bytes: int | None = None
) -> float:
    """Device memory a plan may fill: headroom × the catalog memory (or `memory_bytes`, e.g. host RAM)."""
    total = memory_bytes if memory_bytes is not None else acc.memory_bytes
    if total is None:
        raise ValueError(f"accelerator {acc.name!r} has no memory size; pass memory_bytes (e.g. host RAM)")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must lie in (0, 1], got {headroom}")
    return headroom * total


def fits(model: ModelShape, setup: TrainSetup, capacity_bytes: float) -> bool:
    return train_memory(model, setup).peak <= capacity_bytes


def min_gpus(model: ModelShape, setup: TrainSetup, capacity_bytes: float, max_gpus: int) -> int | None:
    """Fewest GPUs (setup.n_gpus replaced) whose per-GPU peak fits; None if even `max_gpus` do not.

    Only counts divisible by ep_size are tried. Under DDP memory per GPU does not fall with more GPUs, so
    the answer is 1 or None there; ZeRO and expert parallelism shrink it.
    """
    for n in range(setup.ep_size, max_gpus + 1, setup.ep_size):
        if fits(model, replace(setup, n_gpus=n), capacity_bytes):
            return n
    return None


def max_micro_batch(model: ModelShape, setup: TrainSetup, capacity_bytes: float, limit: int = 4096) -> int:
    """Largest micro-batch (sequences per GPU) that fits, by bisection (memory grows with it); 0 if none."""
    if not fits(model, replace(setup, micro_batch=1), capacity_bytes):
        return 0
    lo, hi = 1, limit + 1  # fits(lo) and not fits(hi) (or hi beyond the limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(model, replace(setup, micro_batch=mid), capacity_bytes) else (lo, mid)
    return lo


@dataclass(frozen=True)
class InferMemory:
    """Device bytes of batched decoding, and the host side of offloaded L3 tables."""

    weights: float
    kv_cache: float
    activations: float  # prefill transient: the logits of every prompt position + one block's working set
    l3_tables_device: float
    l3_tables_host: float  # pinned host memory needed when offloaded
    l3_bytes_per_step: float  # host->device bytes per decode step (offloaded), all L3 layers
    fgram_table_device: float = 0.0  # SCONE's F on the device (placement "device"): storage, not params
    fgram_table_host: float = 0.0  # SCONE's F in host memory (or a memory-mapped file), when offloaded
    fgram_bytes_per_step: float = 0.0  # offloaded: at most one F row per sequence per decode step

    @property
    def device_total(self) -> float:
        return (
            self.weights + self.kv_cache + self.activations + self.l3_tables_device + self.fgram_table_device
        )


def kv_cache_bytes(model: ModelShape, batch: int, context_len: int, dtype_bytes: int) -> float:
    """K and V of every layer: 2 · L · n_kv_heads · head_dim · context · batch · dtype bytes."""
    return 2.0 * model.n_layers * model.kv_dim * context_len * batch * dtype_bytes


def infer_memory(model: ModelShape, setup: InferSetup) -> InferMemory:
    """Inference memory: weights, KV cache for batch × context, prefill transient, L3 device vs host."""
    e = setup.dtype_bytes
    weights = e * (model.params_dense + model.params_embeddings + model.params_experts)
    tables = e * model.params_l3_tables
    prompt = setup.prompt_len or setup.context_len
    tokens = setup.batch * prompt
    acts = tokens * (model.vocab_size + 3 * model.ffn_dim + 4 * model.dim + 2 * model.kv_dim) * e
    per_step = 0.0
    if model.l3 and setup.l3_placement == "offload":
        rows = l3_unique_rows(model, setup.batch)  # one new token per sequence per step
        per_step = model.l3.n_layers * rows * model.l3.row_width * e
    offload = setup.l3_placement == "offload"  # SCONE: where its f-gram table F lives
    fgram = float(model.fgram_rows * model.dim * e)
    return InferMemory(
        weights=weights,
        kv_cache=kv_cache_bytes(model, setup.batch, setup.context_len, e),
        activations=acts,
        l3_tables_device=0.0 if offload else tables,
        l3_tables_host=tables if offload else 0.0,
        l3_bytes_per_step=per_step,
        fgram_table_device=0.0 if offload else fgram,
        fgram_table_host=fgram if offload else 0.0,
        fgram_bytes_per_step=float(setup.batch * model.dim * e) if fgram and offload else 0.0,
    )
