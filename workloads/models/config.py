"""Model configs: one frozen `ModelConfig` per model, composed with optional `L3Config` / `MoEConfig` /
`SconeConfig`.
Details: docs/workloads.md#workloadsmodelsconfig."""

from dataclasses import dataclass, field
from typing import Annotated, Literal

from workloads.fields import (
    Ge,
    MinLen,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Predicate,
    check_fields,
    strictly_increasing,
)

Family = Literal["dense", "l3", "moe", "scone", "hash_moe"]
Allocation = Literal["lzw", "lzw-paper", "uniform"]
DType = Literal["float32", "bfloat16", "float16"]
# Mirrors workloads.kernels.l3_lookup.op.LookupImpl (a test keeps the two equal); kept here so that
# configs stay importable without torch.
L3Impl = Literal["auto", "reference", "sorted", "small", "triton"]

FAMILIES: tuple[str, ...] = ("dense", "l3", "moe", "scone", "hash_moe")
# Families with MoE experts (`moe` config): matched iso-active with dense and iso-total with the group's L3
# model. "hash_moe" routes by a fixed hash of the token id (workloads/models/hash_moe.py), not a router.
EXPERT_FAMILIES: tuple[str, ...] = ("moe", "hash_moe")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
Positions = Annotated[tuple[NonNegInt, ...], MinLen(1), Predicate(strictly_increasing)]  # block indices


def middle_positions(n_layers: int, count: int) -> tuple[int, ...]:
    """`count` block indices spread evenly through the interior of the stack (L3 works best mid-depth).

    Block i is followed by position i; for 2 layers in 20 blocks this gives (6, 12), i.e. after the 7th
    and 13th blocks. The paper's example (after blocks 4 and 16) can be set explicitly in `L3Config`.
    """
    if count < 1 or count > n_layers:
        raise ValueError(f"cannot place {count} sublayers in {n_layers} blocks")
    return tuple(round(n_layers * (i + 1) / (count + 1)) - 1 for i in range(count))


@dataclass(frozen=True)
class L3Config:
    """L3 sublayers (L3_SPEC §1): one after each block in `positions`, each with its own tables.

    budget: rows v per L3 layer (Σ_t d_t), vocab_size <= budget <= vocab_size * cap.
    d_emb: value-row width (= dim when tied). d_up: width of W_up's output.
    residual: h = h + L3(h) instead of h = L3(h) (the paper's choice is not public; replace is default).
    allocation: how rows per token are chosen when the model is built without explicit counts; only
    "uniform" can be computed from the config alone, "lzw" and "lzw-paper" (the published reference
    loop on lines, workloads.l3.lzw_paper) need a corpus (see Transformer).
    """

    positions: Positions
    budget: PosInt
    d_emb: PosInt
    d_up: PosInt = 4096
    cap: PosInt = 512
    tied: bool = False
    residual: bool = False
    allocation: Allocation = "lzw"
    impl: L3Impl = "auto"

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class MoEConfig:
    """DeepSpeed-MoE blocks: the blocks in `positions` use `num_experts` SwiGLU experts (top_k routed)
    instead of the dense MLP. Fields map 1:1 to `deepspeed.moe.layer.MoE` arguments.

    aux_loss_coef scales the summed load-balancing loss that `Transformer.forward` returns.
    use_rts / top2_sampling: DeepSpeed's random token selection and sampled 2nd expert; both draw random
    numbers even in eval, so turn them off for bit-reproducible evaluation.
    """

    positions: Positions
    num_experts: PosInt
    ffn_dim: PosInt
    top_k: PosInt = 1
    capacity_factor: PosFloat = 1.0
    eval_capacity_factor: PosFloat = 1.0
    min_capacity: NonNegInt = 4
    drop_tokens: bool = True
    aux_loss_coef: NonNegFloat = 0.01
    ep_size: PosInt = 1
    use_rts: bool = True
    top2_sampling: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if self.top_k > self.num_experts:
            raise ValueError(f"moe.top_k={self.top_k} exceeds moe.num_experts={self.num_experts}")
        if self.num_experts % self.ep_size:
            raise ValueError(
                f"moe.num_experts={self.num_experts} is not divisible by moe.ep_size={self.ep_size}"
            )


@dataclass(frozen=True)
class SconeConfig:
    """SCONE f-gram input embeddings (L3_SPEC §6; Yu et al., arXiv 2502.01637).

    n_fgrams: S, the f-grams kept by discovery (rows of the inference table F). max_n: K, the longest
    f-gram (n = 2..K; A_fgram's absolute positions). min_count: discovery's threshold from scan 3 on.
    A_fgram is the main model's block stack without token embedding, `fgram_layers` blocks deep, else
    round(depth_multiplier · model.n_layers) (the paper scales A_fgram in depth only, 0.5×-3×).
    fgram_ffn_dim: the width of A_fgram's MLPs (None: the main model's ffn_dim); its residual width stays
    model.dim, since its output stands in for a token embedding.
    """

    n_fgrams: PosInt
    max_n: Annotated[int, Ge(2)] = 5
    min_count: PosInt = 5
    fgram_layers: PosInt | None = None
    depth_multiplier: PosFloat = 1.0
    fgram_ffn_dim: PosInt | None = None

    def __post_init__(self) -> None:
        check_fields(self)

    def ffn_dim(self, model_ffn_dim: int) -> int:
        """A_fgram's MLP width for a main model whose MLPs are `model_ffn_dim` wide."""
        return self.fgram_ffn_dim if self.fgram_ffn_dim is not None else model_ffn_dim

    def layers(self, n_layers: int) -> int:
        """A_fgram's depth for a main model of `n_layers` blocks."""
        if self.fgram_layers is not None:
            return self.fgram_layers
        return max(1, round(self.depth_multiplier * n_layers))


@dataclass(frozen=True)
class BlockSpec:
    """What block `index` is made of: its MLP kind and whether an L3 sublayer follows it."""

    index: int
    mlp: Literal["dense", "moe"]
    l3_after: bool


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder (RMSNorm, RoPE, GQA, SwiGLU) plus the family's sparse parts.

    family "dense" has neither `l3` nor `moe` nor `scone`; "l3" needs `l3`; "moe" and "hash_moe" need
    `moe`; "scone" needs `scone` (a dense backbone whose input embedding at f-gram positions comes from
    A_fgram).
    dtype is the parameter dtype the model is built in.
    """

    vocab_size: PosInt
    dim: PosInt
    n_layers: PosInt
    n_heads: PosInt
    n_kv_heads: PosInt
    ffn_dim: PosInt
    max_seq_len: PosInt = 2048
    norm_eps: PosFloat = 1e-5
    rope_theta: PosFloat = 10000.0
    tie_embeddings: bool = False
    dtype: DType = "float32"
    family: Family = "dense"
    l3: L3Config | None = field(default=None)
    moe: MoEConfig | None = field(default=None)
    scone: SconeConfig | None = field(default=None)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.dim % self.n_heads:
            raise ValueError(f"model.dim={self.dim} is not divisible by model.n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads={self.n_kv_heads} "
                "(grouped-query attention shares each kv head among n_heads / n_kv_heads query heads)"
            )
        if self.head_dim % 2:
            raise ValueError(f"model head_dim = dim / n_heads = {self.head_dim} must be even for RoPE")
        self._check_family()

    def _check_family(self) -> None:
        wants_l3, wants_moe = self.family == "l3", self.family in EXPERT_FAMILIES
        if (self.l3 is not None) != wants_l3:
            raise ValueError(
                f"model.family={self.family!r} {'needs' if wants_l3 else 'must not have'} an l3 config"
            )
        if (self.moe is not None) != wants_moe:
            raise ValueError(
                f"model.family={self.family!r} {'needs' if wants_moe else 'must not have'} a moe config"
            )
        if (self.scone is not None) != (self.family == "scone"):
            raise ValueError(
                f"model.family={self.family!r} {'needs' if self.family == 'scone' else 'must not have'} "
                "a scone config"
            )
        if self.family == "hash_moe" and self.moe.ep_size != 1:
            raise ValueError(
                f"hash_moe keeps its experts on every rank: moe.ep_size must be 1, got {self.moe.ep_size}"
            )
        for name, sub in (("l3", self.l3), ("moe", self.moe)):
            if sub is not None and sub.positions[-1] >= self.n_layers:
                raise ValueError(
                    f"{name}.positions={sub.positions} must lie in [0, {self.n_layers}) "
                    f"(model.n_layers={self.n_layers})"
                )
        if self.l3 is not None:
            if self.l3.tied and self.l3.d_emb != self.dim:
                raise ValueError(
                    f"l3.tied=True needs l3.d_emb == model.dim, got {self.l3.d_emb} != {self.dim}"
                )
            if not self.vocab_size <= self.l3.budget <= self.vocab_size * self.l3.cap:
                raise ValueError(
                    f"l3.budget={self.l3.budget} must lie in [vocab_size, vocab_size * cap] = "
                    f"[{self.vocab_size}, {self.vocab_size * self.l3.cap}]: every token owns 1..cap rows"
                )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def block_specs(self) -> tuple[BlockSpec, ...]:
        """The per-layer block spec the Transformer is built from."""
        moe_at = set(self.moe.positions) if self.moe else set()
        l3_at = set(self.l3.positions) if self.l3 else set()
        return tuple(
            BlockSpec(index=i, mlp="moe" if i in moe_at else "dense", l3_after=i in l3_at)
            for i in range(self.n_layers)
        )
