"""Parameter accounting from config arithmetic alone (paper sizes are counted without allocating them).
Details: docs/workloads.md#workloadsmodelsaccounting."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from workloads.models.config import ModelConfig

CATEGORIES: tuple[str, ...] = ("dense", "l3_tables", "experts", "embeddings")
FGRAM_CATEGORY = "fgram_model"  # present in the counts of scone models only


@dataclass(frozen=True)
class ParamCount:
    """active/total parameters, split by category.

    active_max / active_min: the L3 extremes L3_SPEC §5 asks for: a token with the most rows (the largest
    count, at most the cap) and one with the fewest. Without L3 both equal `active`.
    estimated: True when the L3 rows per token are not corpus-weighted (no token_freqs, or no counts for
    an LZW allocation): then the L3 active numbers are the budget / vocab_size guess.
    `flops_active`: the active parameters a token is multiplied with (2 FLOPs each forward): `active`
    without the untied input embedding table, which is read one row at a time and multiplies nothing.
    MFU and the capacity model's FLOPs use it; comparisons use `active`.
    """

    active: int
    total: int
    by_category: dict[str, int]
    active_by_category: dict[str, int]
    active_max: int
    active_min: int
    flops_active: int
    estimated: bool = False

    @property
    def sparsity(self) -> float:
        """total / active."""
        return self.total / self.active


def attention_params(config: ModelConfig) -> int:
    q_out, kv_out = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return config.dim * q_out + 2 * config.dim * kv_out + q_out * config.dim  # wq, wk + wv, wo


def mlp_params(dim: int, ffn_dim: int) -> int:
    return 3 * dim * ffn_dim  # SwiGLU: w1, w3 (dim -> ffn), w2 (ffn -> dim)


def block_params(config: ModelConfig) -> int:
    """One decoder block with a dense MLP: two RMSNorms, attention, SwiGLU."""
    return 2 * config.dim + attention_params(config) + mlp_params(config.dim, config.ffn_dim)


def fgram_model_params(config: ModelConfig) -> int:
    """SCONE's A_fgram: scone.layers(n_layers) dense blocks (MLPs scone.ffn_dim(ffn_dim) wide) + K absolute
    position embeddings."""
    sc = config.scone
    inner = replace(config, ffn_dim=sc.ffn_dim(config.ffn_dim))
    return sc.layers(config.n_layers) * block_params(inner) + sc.max_n * config.dim


def fgram_table_bytes(config: ModelConfig, bytes_per_value: int = 2) -> int:
    """Bytes of SCONE's inference table F: n_fgrams rows of dim values (fp16/bf16 by default, as the
    paper stores it: 10M f-grams at d = 2048 = 41 GB)."""
    return config.scone.n_fgrams * config.dim * bytes_per_value


def fgram_train_flops_per_token(config: ModelConfig, fgram_tokens_per_token: float) -> float:
    """SCONE's extra training FLOPs per main-model token: 6 · A_fgram parameters per f-gram token that
    A_fgram encodes (forward + backward), times the f-gram tokens encoded per training token (measured:
    each distinct f-gram of a micro-batch once, all of its tokens). The paper's point: SCONE trains with
    more compute than its inference-matched baseline."""
    return 6.0 * fgram_model_params(config) * fgram_tokens_per_token


def fgram_plan_train_flops_per_token(config: ModelConfig) -> float:
    """A_fgram's training FLOPs per token for planning, before any run measured train/fgram_tokens_per_token:
    the bound of one f-gram of max_n tokens encoded per position (each distinct f-gram of a micro-batch is
    encoded once, so runs measure less: the plan errs long, never short)."""
    return 0.0 if config.scone is None else fgram_train_flops_per_token(config, float(config.scone.max_n))


def l3_row_width(config: ModelConfig) -> int:
    """Parameters per L3 table row: a key (dim) and, unless tied, a value (d_emb)."""
    return config.dim + (0 if config.l3.tied else config.l3.d_emb)


def l3_dense_params(config: ModelConfig) -> int:
    """One L3 layer's non-table parameters: W_up, W_mix, RMSNorm_in, RMSNorm_out."""
    l3 = config.l3
    return l3.d_emb * l3.d_up + (l3.d_up + config.dim) * config.dim + config.dim + l3.d_up


def _check_freqs(token_freqs, vocab: int) -> np.ndarray | None:
    if token_freqs is None:
        return None
    freqs = np.asarray(token_freqs, dtype=np.float64)
    if freqs.shape != (vocab,) or freqs.min() < 0 or freqs.sum() <= 0:
        raise ValueError(
            f"token_freqs must be ({vocab},) non-negative with a positive sum, got shape {freqs.shape}"
        )
    return freqs


def _l3_rows_per_token(
    config: ModelConfig,
    token_freqs: Sequence[float] | np.ndarray | None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None,
) -> tuple[dict[int, tuple[float, int, int]], bool]:
    """({position: (mean, max, min rows per token)} for every L3 layer, estimated).

    The mean is weighted by `token_freqs`; without them (no corpus) it is budget / vocab_size, and the
    max / min are those of the counts when given, else of the most / least a token can own."""
    l3, vocab = config.l3, config.vocab_size
    freqs = _check_freqs(token_freqs, vocab)
    out, estimated = {}, freqs is None
    for pos in l3.positions:
        counts = None if l3_counts is None or pos not in l3_counts else np.asarray(l3_counts[pos])
        if counts is None and l3.allocation == "uniform":
            from workloads.l3.allocation import uniform_allocate

            counts = uniform_allocate(vocab, l3.budget, l3.cap)
        if counts is None:
            if freqs is not None:
                raise ValueError(
                    f"token_freqs weighting needs the rows per token of L3 position {pos}: pass l3_counts "
                    f"(l3.allocation={l3.allocation!r} cannot be derived from the config)"
                )
            least = max(1, l3.budget - (vocab - 1) * l3.cap)
            out[pos] = (l3.budget / vocab, min(l3.cap, l3.budget - vocab + 1), least)
            continue
        if counts.shape != (vocab,) or int(counts.sum()) != l3.budget:
            raise ValueError(
                f"l3_counts[{pos}] must have shape ({vocab},) and sum to l3.budget={l3.budget}, "
                f"got shape {counts.shape} summing to {int(counts.sum())}"
            )
        mean = l3.budget / vocab if freqs is None else float((freqs * counts).sum() / freqs.sum())
        out[pos] = (mean, int(counts.max()), int(counts.min()))
    return out, estimated


def block_counts(config: ModelConfig) -> tuple[tuple[int, int, int], ...]:
    """(dense, experts, l3_tables) parameters stored in each block, its L3 sublayer included. With the
    final norm and the embeddings they sum to `count_params`' totals; the capacity model gets them through
    `clusters.shapes.ModelShape.blocks` (built by the orchestrator) instead of re-deriving them."""
    c, out = config, []
    for spec in c.block_specs():
        dense, experts, tables = 2 * c.dim + attention_params(c), 0, 0  # two RMSNorms + attention
        if spec.mlp == "dense":
            dense += mlp_params(c.dim, c.ffn_dim)
        else:
            dense += 0 if c.family == "hash_moe" else c.dim * c.moe.num_experts  # router (hash_moe: none)
            experts = c.moe.num_experts * mlp_params(c.dim, c.moe.ffn_dim)
        if spec.l3_after:
            dense += l3_dense_params(c)
            tables = c.l3.budget * l3_row_width(c)
        out.append((dense, experts, tables))
    return tuple(out)


def train_flops_terms(config: ModelConfig, flops_active: int) -> tuple[float, float]:
    """(6·N_active, 12·L·H·Q): training FLOPs per token are the first plus the second × seq_len (forward +
    backward matmuls, attention: PaLM's MFU numerator). N_active: `ParamCount.flops_active`."""
    return 6.0 * flops_active, 12.0 * config.n_layers * config.n_heads * config.head_dim


def train_flops_per_token(config: ModelConfig, flops_active: int, seq_len: int) -> float:
    """See `train_flops_terms`; the jobs' MFU and the capacity model (`ModelShape`) both use them."""
    fixed, per_position = train_flops_terms(config, flops_active)
    return fixed + per_position * seq_len


def count_params(
    config: ModelConfig,
    token_freqs: Sequence[float] | np.ndarray | None = None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None = None,
) -> ParamCount:
    """Active and total parameters of `config`; equals `sum(p.numel())` of the built Transformer (total).

    token_freqs: (vocab_size,) corpus token counts or probabilities, to weight L3 rows per token.
    l3_counts: {L3 position: rows per token}, as passed to the Transformer; needed with token_freqs unless
    l3.allocation is "uniform" (then the uniform allocation is used).
    """
    c = config
    total = dict.fromkeys(CATEGORIES, 0)
    active = dict.fromkeys(CATEGORIES, 0)
    for dense, experts, tables in block_counts(c):
        total["dense"] += dense
        total["experts"] += experts
        total["l3_tables"] += tables
    n_moe = sum(spec.mlp != "dense" for spec in c.block_specs())
    active["experts"] = n_moe * c.moe.top_k * mlp_params(c.dim, c.moe.ffn_dim) if n_moe else 0
    total["dense"] += c.dim  # final norm
    active["dense"] = total["dense"]
    table = c.vocab_size * c.dim
    total["embeddings"] = table if c.tie_embeddings else 2 * table
    active["embeddings"] = total["embeddings"]  # counted fully (L3_SPEC §5, the paper's Table 1)
    if c.scone is not None:  # A_fgram: training-time only (L3_SPEC §6)
        total[FGRAM_CATEGORY], active[FGRAM_CATEGORY] = fgram_model_params(c), 0
    l3_max = l3_min = 0
    estimated = False
    if c.l3 is not None:
        rows, estimated = _l3_rows_per_token(c, token_freqs, l3_counts)
        width = l3_row_width(c)
        active["l3_tables"] = round(sum(mean for mean, _, _ in rows.values()) * width)
        l3_max = sum(most for _, most, _ in rows.values()) * width
        l3_min = sum(least for _, _, least in rows.values()) * width
    n_active = sum(active.values())
    return ParamCount(
        active=n_active,
        total=sum(total.values()),
        by_category=total,
        active_by_category=active,
        active_max=n_active - active["l3_tables"] + l3_max,
        active_min=n_active - active["l3_tables"] + l3_min,
        flops_active=n_active - (0 if c.tie_embeddings else table),
        estimated=estimated,
    )


def _attention_flops(config: ModelConfig, context: float) -> float:
    """FLOPs of one token's attention over `context` cached positions, all layers: q·k and p·v, 2 each."""
    return 4.0 * config.n_layers * config.n_heads * config.head_dim * context


def _kv_bytes(config: ModelConfig, context: float, element_bytes: int) -> float:
    """K and V of `context` positions, all layers."""
    return 2.0 * config.n_layers * config.n_kv_heads * config.head_dim * context * element_bytes


def decode_step_cost(
    config: ModelConfig,
    pc: ParamCount,
    batch: int,
    context: float,
    experts_touched: float | None = None,
    element_bytes: int = 4,
) -> tuple[float, float]:
    """(bytes read, FLOPs) at the least for one KV-cache decode step of `batch` sequences at `context`
    cached positions (the roofline of `workloads.probe`): the dense weights and the LM head once, `batch`
    embedding rows, the experts touched (`experts_touched`: distinct experts summed over the MoE layers,
    measured; default min(batch · top_k, num_experts) per layer), the L3 rows of `batch` tokens
    (corpus-weighted mean), and the KV cache. FLOPs: 2 per active weight per token plus attention."""
    a = pc.active_by_category
    table = config.vocab_size * config.dim
    weights = a["dense"] + table + batch * config.dim * (0 if config.tie_embeddings else 1)
    if config.moe is not None:
        moe = config.moe
        if experts_touched is None:
            experts_touched = len(moe.positions) * min(batch * moe.top_k, moe.num_experts)
        weights += experts_touched * mlp_params(config.dim, moe.ffn_dim)
    weights += min(batch * a.get("l3_tables", 0), pc.by_category.get("l3_tables", 0))
    nbytes = weights * element_bytes + _kv_bytes(config, batch * context, element_bytes)
    flops = batch * (2.0 * pc.flops_active + _attention_flops(config, context))
    return float(nbytes), float(flops)


def decode_working_set_bytes(
    config: ModelConfig, pc: ParamCount, batch: int, context: float, element_bytes: int = 4
) -> float:
    """Bytes a run of decode steps keeps touching (the working set `MachineProbe.read_rate` picks the read
    bandwidth by): every parameter a step can reach (a MoE's steps route to any expert, an L3 step reads
    any row of its tables), but of an untied input embedding only the `batch` rows a step reads, and the
    KV cache at `context`. For a dense model it equals `decode_step_cost`'s bytes."""
    untied_unread = 0 if config.tie_embeddings else (config.vocab_size - batch) * config.dim
    weights = sum(pc.by_category.get(c, 0) for c in CATEGORIES) - untied_unread  # no A_fgram (training only)
    return float(weights * element_bytes + _kv_bytes(config, batch * context, element_bytes))


def prefill_cost(
    config: ModelConfig, pc: ParamCount, batch: int, prompt_len: int, element_bytes: int = 4
) -> tuple[float, float]:
    """(bytes, FLOPs) at the least of a prefill of `batch` prompts of `prompt_len`: every stored weight a
    prompt can reach read once (all experts; L3 rows of every token, at most the tables) and the KV cache
    written; FLOPs 2 per active weight per token plus causal attention (context grows 1..prompt_len)."""
    tokens = batch * prompt_len
    total = pc.by_category
    weights = total["dense"] + total["embeddings"] + total.get("experts", 0)
    weights += min(tokens * pc.active_by_category.get("l3_tables", 0), total.get("l3_tables", 0))
    nbytes = weights * element_bytes + _kv_bytes(config, tokens, element_bytes)
    flops = tokens * (2.0 * pc.flops_active + _attention_flops(config, (prompt_len + 1) / 2))
    return float(nbytes), float(flops)


def train_step_cost(
    config: ModelConfig, pc: ParamCount, batch: int, seq_len: int, element_bytes: int = 4
) -> tuple[float, float]:
    """(bytes, FLOPs) at the least of one AdamW training step over batch × seq_len tokens: every stored
    weight read in the forward and the backward, its gradient written, and AdamW reading weight, gradient
    and both moments and writing weight and moments (10 accesses per parameter); FLOPs 3× the forward's
    (forward, backward to activations and to weights)."""
    tokens = batch * seq_len
    nbytes = 10.0 * pc.total * element_bytes
    flops = 3.0 * tokens * (2.0 * pc.flops_active + _attention_flops(config, (seq_len + 1) / 2))
    return float(nbytes), float(flops)
