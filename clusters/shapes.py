"""Plain descriptions the capacity model works from: model shape and counts, training or inference setup.

`clusters/` never imports workloads or torch: the orchestrator (orchestrator/planning/plan.py) converts a
workloads `ModelConfig` + `count_params` into a `ModelShape`. Counts are parameters (not bytes).
"""

from dataclasses import dataclass
from typing import Literal

Precision = Literal["fp32", "amp-bf16", "bf16-master"]
PRECISIONS: tuple[str, ...] = ("fp32", "amp-bf16", "bf16-master")
Attention = Literal["flash", "math"]
OptimizerImpl = Literal["foreach", "for-loop", "fused"]


def _positive(owner: str, shape, names: str) -> None:
    """Each of the space-separated fields `names` of `shape` is a number > 0 (else ValueError naming it)."""
    for name in names.split():
        value = getattr(shape, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


def _positions(owner: str, positions: tuple[int, ...]) -> None:
    if (
        not isinstance(positions, tuple)
        or not positions
        or any(not isinstance(p, int) or p < 0 for p in positions)
    ):
        raise ValueError(
            f"{owner}.positions must be a non-empty tuple of block indices >= 0, got {positions!r}"
        )


@dataclass(frozen=True)
class L3Shape:
    """The model's L3 sublayers (L3_SPEC §1), all alike.

    rows: table rows v per L3 layer; row_width: parameters per row (dim + d_emb, or dim when tied).
    rows_per_token_mean: corpus-weighted mean rows a position reads (budget / vocab without a corpus).
    positions: the blocks each L3 sublayer follows; the offload prefetch window ends at the first.
    """

    positions: tuple[int, ...]
    rows: int
    row_width: int
    d_emb: int
    d_up: int
    rows_per_token_mean: float
    rows_per_token_max: int

    def __post_init__(self) -> None:
        _positions("l3", self.positions)
        _positive("l3", self, "rows row_width d_emb d_up rows_per_token_mean rows_per_token_max")

    @property
    def n_layers(self) -> int:
        return len(self.positions)

    @property
    def first_block(self) -> int:
        return self.positions[0]


@dataclass(frozen=True)
class MoEShape:
    """The model's MoE blocks (DeepSpeed-MoE top-k gating with a capacity per expert)."""

    positions: tuple[int, ...]
    num_experts: int
    top_k: int
    ffn_dim: int
    capacity_factor: float = 1.0
    min_capacity: int = 4

    def __post_init__(self) -> None:
        _positions("moe", self.positions)
        _positive("moe", self, "num_experts top_k ffn_dim capacity_factor")

    @property
    def n_layers(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class ModelShape:
    """A decoder's dimensions and parameter counts by category (L3_SPEC §5 definitions).

    params_dense: attention, dense MLPs, norms, routers, L3 W_up/W_mix/norms.
    params_embeddings: token embedding + LM head (once when tied).
    params_active: parameters multiplied per token (L3 rows at their mean, top-k experts; not the input
        embedding lookup: `count_params(...).flops_active`); inference FLOPs are derived from it.
    blocks: (dense, experts, l3_tables) parameters of each block (`accounting.block_counts`).
    train_flops: training FLOPs per token = train_flops[0] + train_flops[1] × seq_len
        (`accounting.train_flops_terms`). Both are handed over, never re-derived here.
    params_fgram_model: SCONE's A_fgram, trained with the model but never resident at inference.
    fgram_rows: SCONE's f-gram table F (rows of dim values): host storage at inference, not parameters.
    """

    name: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    max_seq_len: int
    tie_embeddings: bool
    params_dense: int
    params_embeddings: int
    params_active: int
    params_l3_tables: int = 0
    params_experts: int = 0
    l3: L3Shape | None = None
    moe: MoEShape | None = None
    params_fgram_model: int = 0
    fgram_rows: int = 0
    blocks: tuple[tuple[int, int, int], ...] = ()
    train_flops: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.blocks) != self.n_layers or self.train_flops[0] <= 0:
            raise ValueError("model.blocks (one per layer) and model.train_flops must come from accounting")
        _positive(
            "model", self, "vocab_size dim n_layers n_heads n_kv_heads ffn_dim max_seq_len params_active"
        )
        if (self.params_l3_tables > 0) != (self.l3 is not None):
            raise ValueError("model.params_l3_tables > 0 exactly when model.l3 is given")
        if (self.params_experts > 0) != (self.moe is not None):
            raise ValueError("model.params_experts > 0 exactly when model.moe is given")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def params_total(self) -> int:
        """Everything stored in training (SCONE: A_fgram included; its table F is storage, not counted)."""
        parts = self.params_dense + self.params_embeddings + self.params_l3_tables + self.params_experts
        return parts + self.params_fgram_model

    @property
    def params_lm_head(self) -> int:
        return self.vocab_size * self.dim

    def train_flops_per_token(self, seq_len: int) -> float:
        return self.train_flops[0] + self.train_flops[1] * seq_len

    def largest_param(self) -> int:
        """Elements of the largest parameter tensor (the for-loop AdamW temporaries scale with it)."""
        sizes = [self.vocab_size * self.dim, self.ffn_dim * self.dim]
        if self.l3 is not None:
            sizes += [
                self.l3.rows * self.dim,
                self.l3.rows * (self.l3.row_width - self.dim),
                self.dim * (self.l3.d_up + self.dim),
            ]
        if self.moe is not None:
            sizes.append(self.moe.ffn_dim * self.dim)
        return max(sizes)


@dataclass(frozen=True)
class TrainSetup:
    """How a training job runs on each GPU.

    micro_batch × seq_len tokens per GPU per forward; grad_accum micro-batches per optimizer step.
    n_gpus: data-parallel world size. zero_stage 0 = DDP (everything replicated), 1 shards optimizer
    states, 2 also gradients (Rajbhandari et al. 2020). ep_size: expert-parallel degree (MoE experts are
    split over ep_size GPUs; their data-parallel group is n_gpus / ep_size).
    precision: "fp32"; "amp-bf16" = fp32 parameters under torch.autocast(bfloat16) (what the train job
    does on GPU); "bf16-master" = bf16 parameters/gradients with fp32 master weights in the optimizer.
    attention: "flash" (no score matrix stored) or "math" (B·H·T·T scores materialized).
    optimizer_impl: torch AdamW's implementation: "foreach" (its default on CUDA: one temporary the size of
    all parameters), "for-loop" (its default on CPU: temporaries of one tensor at a time), "fused" (none).
    """

    micro_batch: int
    seq_len: int
    n_gpus: int = 1
    grad_accum: int = 1
    zero_stage: int = 0
    ep_size: int = 1
    precision: Precision = "amp-bf16"
    activation_checkpointing: bool = False
    attention: Attention = "flash"
    optimizer_impl: OptimizerImpl = "foreach"

    def __post_init__(self) -> None:
        if self.optimizer_impl not in ("foreach", "for-loop", "fused"):
            raise ValueError(
                f"train.optimizer_impl must be foreach/for-loop/fused, got {self.optimizer_impl!r}"
            )
        _positive("train", self, "micro_batch seq_len n_gpus grad_accum ep_size")
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"train.zero_stage must be 0 (DDP), 1 or 2, got {self.zero_stage!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.attention not in ("flash", "math"):
            raise ValueError(f"train.attention must be 'flash' or 'math', got {self.attention!r}")
        if self.n_gpus % self.ep_size:
            raise ValueError(f"train.n_gpus={self.n_gpus} is not divisible by train.ep_size={self.ep_size}")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all GPUs."""
        return self.micro_batch * self.seq_len * self.grad_accum * self.n_gpus


@dataclass(frozen=True)
class InferSetup:
    """Batched decoding: `batch` sequences of `context_len` positions (prompt + generated) each.

    l3_placement "device" keeps the L3 tables in device memory; "offload" keeps them in pinned host memory
    and copies each step's rows (L3_SPEC §4). dtype_bytes: weights, KV cache and activations (2 = bf16).
    """

    batch: int
    context_len: int
    prompt_len: int | None = None
    dtype_bytes: int = 2
    l3_placement: Literal["device", "offload"] = "device"

    def __post_init__(self) -> None:
        _positive("infer", self, "batch context_len dtype_bytes")
        if self.l3_placement not in ("device", "offload"):
            raise ValueError(f"infer.l3_placement must be 'device' or 'offload', got {self.l3_placement!r}")
        if self.prompt_len is not None and not 0 < self.prompt_len <= self.context_len:
            raise ValueError(f"infer.prompt_len must lie in [1, context_len], got {self.prompt_len}")
