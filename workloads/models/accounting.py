"""Parameter accounting from config arithmetic alone (paper sizes are counted without allocating them).

Definitions follow L3_SPEC §5: total = everything stored; active = parameters touched per token.
Categories (`by_category`, `active_by_category`):
  dense       attention, dense MLPs, all norms, MoE routers, L3 W_up/W_mix/norms   (all active)
  l3_tables   L3 key/value rows; active = mean rows per token d_t · (dim + d_emb) per L3 layer, where the
              mean is weighted by `token_freqs` when given, else budget / vocab_size
  experts     MoE expert MLPs; active = top_k experts per MoE block
  embeddings  token embedding + LM head; active = one embedding row + the whole head (every logit is
              computed). Tied embeddings are stored once and, being the head, fully active.
  fgram_model SCONE's A_fgram (blocks + absolute positions); a training-time parameter, never active
              (a key of scone models only).
SCONE (L3_SPEC §6), as the paper counts: active = the inference-resident parameters (A_main + the whole
token embedding + head); total = the training-time parameters (those + A_fgram). The table F is storage,
reported in bytes (`fgram_table_bytes`), not as parameters.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from workloads.models.config import ModelConfig

CATEGORIES: tuple[str, ...] = ("dense", "l3_tables", "experts", "embeddings")
FGRAM_CATEGORY = "fgram_model"  # present in the counts of scone models only


@dataclass(frozen=True)
class ParamCount:
    """active/total parameters, split by category. `active_max` is the L3 worst case: every lookup hits a
    token with the most rows (max of the counts, else the cap), as L3_SPEC §5 asks to report."""

    active: int
    total: int
    by_category: dict[str, int]
    active_by_category: dict[str, int]
    active_max: int

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
    """SCONE's A_fgram: scone.layers(n_layers) dense blocks + K absolute position embeddings."""
    sc = config.scone
    return sc.layers(config.n_layers) * block_params(config) + sc.max_n * config.dim


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


def l3_row_width(config: ModelConfig) -> int:
    """Parameters per L3 table row: a key (dim) and, unless tied, a value (d_emb)."""
    return config.dim + (0 if config.l3.tied else config.l3.d_emb)


def l3_dense_params(config: ModelConfig) -> int:
    """One L3 layer's non-table parameters: W_up, W_mix, RMSNorm_in, RMSNorm_out."""
    l3 = config.l3
    return l3.d_emb * l3.d_up + (l3.d_up + config.dim) * config.dim + config.dim + l3.d_up


def _l3_rows_per_token(
    config: ModelConfig,
    token_freqs: Sequence[float] | np.ndarray | None,
    l3_counts: Mapping[int, Sequence[int] | np.ndarray] | None,
) -> dict[int, tuple[float, int]]:
    """{position: (mean rows per token, max rows per token)} for every L3 layer."""
    l3, vocab = config.l3, config.vocab_size
    freqs = None
    if token_freqs is not None:
        freqs = np.asarray(token_freqs, dtype=np.float64)
        if freqs.shape != (vocab,) or freqs.min() < 0 or freqs.sum() <= 0:
            raise ValueError(
                f"token_freqs must be ({vocab},) non-negative with a positive sum, got shape {freqs.shape}"
            )
    out = {}
    for pos in l3.positions:
        counts = None if l3_counts is None or pos not in l3_counts else np.asarray(l3_counts[pos])
        if counts is None and freqs is not None:
            if l3.allocation != "uniform":
                raise ValueError(
                    f"token_freqs weighting needs the rows per token of L3 position {pos}: pass l3_counts "
                    "(l3.allocation='lzw' cannot be derived from the config)"
                )
            from workloads.l3.allocation import uniform_allocate

            counts = uniform_allocate(vocab, l3.budget, l3.cap)
        if counts is None:
            out[pos] = (l3.budget / vocab, min(l3.cap, l3.budget - vocab + 1))
            continue
        if counts.shape != (vocab,) or int(counts.sum()) != l3.budget:
            raise ValueError(
                f"l3_counts[{pos}] must have shape ({vocab},) and sum to l3.budget={l3.budget}, "
                f"got shape {counts.shape} summing to {int(counts.sum())}"
            )
        mean = float(counts.mean()) if freqs is None else float((freqs * counts).sum() / freqs.sum())
        out[pos] = (mean, int(counts.max()))
    return out


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
    block = 2 * c.dim + attention_params(c)  # two RMSNorms + attention
    for spec in c.block_specs():
        total["dense"] += block
        if spec.mlp == "dense":
            total["dense"] += mlp_params(c.dim, c.ffn_dim)
        else:
            total["dense"] += c.dim * c.moe.num_experts  # router
            total["experts"] += c.moe.num_experts * mlp_params(c.dim, c.moe.ffn_dim)
            active["experts"] += c.moe.top_k * mlp_params(c.dim, c.moe.ffn_dim)
        if spec.l3_after:
            total["dense"] += l3_dense_params(c)
            total["l3_tables"] += c.l3.budget * l3_row_width(c)
    total["dense"] += c.dim  # final norm
    active["dense"] = total["dense"]
    table = c.vocab_size * c.dim
    total["embeddings"] = table if c.tie_embeddings else 2 * table
    active["embeddings"] = table if c.tie_embeddings else table + c.dim
    if c.scone is not None:  # inference-resident: the whole token embedding lives on the accelerator
        active["embeddings"] = total["embeddings"]
        total[FGRAM_CATEGORY], active[FGRAM_CATEGORY] = fgram_model_params(c), 0
    l3_max = 0
    if c.l3 is not None:
        rows = _l3_rows_per_token(c, token_freqs, l3_counts)
        active["l3_tables"] = round(sum(mean for mean, _ in rows.values()) * l3_row_width(c))
        l3_max = sum(peak for _, peak in rows.values()) * l3_row_width(c)
    n_active = sum(active.values())
    return ParamCount(
        active=n_active,
        total=sum(total.values()),
        by_category=total,
        active_by_category=active,
        active_max=n_active - active["l3_tables"] + l3_max,
    )
